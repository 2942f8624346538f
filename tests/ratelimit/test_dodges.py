"""From the attacker's side: a client cannot reset or dodge its own count.

A brute-forcer controls the query string, the form body, header values and
how many other identities it sends; none of it may give it a fresh count for
the account it is guessing at, nor lower a count already stored.
"""

import secrets
import time
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.exceptions import Ratelimited
from django_cfkv.local import LocalKV
from django_cfkv.ratelimit import counters

SIGN_IN_RULE = {"path": r"^/sign-in/$", "methods": ["POST"], "rate": "3/h", "key": "post:username"}


@pytest.fixture(autouse=True)
def sign_in_site(site):
    with override_settings(CFKV_RATELIMIT={"RULES": [SIGN_IN_RULE]},
                           PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):  # fast guesses
        yield


@pytest.fixture
def victim(db):
    return User.objects.create_user("victim", password="correct horse battery staple")


def guess(client, path, username, password="wrong", query=None):
    """POST one password guess for ``username``, with ``query`` appended to the URL."""
    url = f"{path}?{query}" if query else path
    return client.post(url, {"username": username, "password": password})


@pytest.mark.parametrize("path", ["/sign-in/", "/decorated-sign-in/"])
def test_a_random_query_string_value_per_post_does_not_dodge_a_post_key(victim, path):
    client = Client()
    responses = [guess(client, path, "victim", query=f"username={secrets.token_hex(8)}") for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429, 429]
    assert responses[0].content == b"wrong username or password"


@pytest.mark.parametrize("path", ["/sign-in/", "/decorated-sign-in/"])
def test_spellings_of_one_username_share_its_count(victim, path):
    # Django's AuthenticationForm strips the username and NFKC-normalizes it, so the first five sign in
    # as "victim" here; backends and databases that ignore case (email logins, iexact) and accents and
    # zero-width characters (MySQL's default collation) let the others in too.
    spellings = ["victim", " victim", "victim\t", "ｖｉｃｔｉｍ", " " * 10_000 + "victim",
                 "Victim", "VICTIM ", "vïctim", "vi\u0301ctim", "vic\u200btim", "\ufeffvictim\u00ad"]
    client = Client()
    assert [guess(client, path, name).status_code for name in spellings] == [200, 200, 200] + [429] * 8


def test_the_spellings_sign_in_as_the_same_user(victim):
    with override_settings(CFKV_RATELIMIT={}):
        for name in ("victim", " victim", "victim\t", "ｖｉｃｔｉｍ", " " * 10_000 + "victim"):
            assert guess(Client(), "/sign-in/", name, "correct horse battery staple").content == b"welcome"


def test_other_usernames_keep_their_own_counts(victim):
    client = Client()
    assert [guess(client, "/sign-in/", "victim").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert guess(client, "/sign-in/", "someone-else").status_code == 200


def test_spellings_of_one_bearer_token_share_its_count():
    # The scheme is case-insensitive (RFC 9110) and views split the header on whitespace.
    rule = {"path": r"^/api/items/$", "rate": "3/h", "key": "header:Authorization"}
    client = Client()
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}):
        codes = [client.get("/api/items/", HTTP_AUTHORIZATION=value).status_code
                 for value in ("Bearer tok3n", "bearer tok3n", "Bearer  tok3n", " BEARER tok3n", "Bearer\ttok3n")]
    assert codes == [200, 200, 200, 429, 429]


# A flood of other identities pushes a client's shard out of memory (MAX_SHARDS)


def test_an_evicted_shard_is_rebuilt_from_what_is_stored_and_never_lowers_it(cfkv, cfkv_emulator, cfkv_calls):
    store = cfkv_emulator.app.store(cfkv.namespace_id)  # what the namespace holds, read without an API call
    # Enough list budget for every new shard's one read: the calls below are all the counter makes.
    counter = rl.ShardedCounter(cfkv, background=False, list_budget=100, max_shards=8)
    now = time.time()
    history = []

    def flush():
        counter.flush()
        history.append({info.name: info.metadata["count"] for info in store.iter_keys(prefix="rl:p:hot:")})

    assert [counter.hit("p", "hot", 10, 3600, now)[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    flush()
    # Eight others, each busier than "hot", push its shard out.
    for n in range(8):
        for _ in range(6):
            counter.hit("p", f"other-{n}", 10, 3600, now)
    assert not any(":hot:" in prefix for prefix in counter._shards)
    assert [counter.hit("p", "hot", 10, 3600, now)[0] for _ in range(3)] == [6, 7, 8]  # not 1, 2, 3
    flush()
    assert sum(history[-1].values()) == 8
    # No stored count of "hot" ever went down, nor their total.
    for before, after in zip(history, history[1:], strict=False):
        assert all(after.get(key, 0) >= count for key, count in before.items())
        assert sum(after.values()) >= sum(before.values())
    # One read per shard built (hot, 8 others, hot again) and one bulk write per flush: no call added.
    assert cfkv_calls.counts == {"list": 10, "bulk_put": 2}
    counter.close()


def test_the_same_through_the_middleware_counting_per_request(cfkv):
    rule = {"path": r"^/login/$", "methods": ["POST"], "rate": "5/h", "key": "ip", "group": "login"}
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}), mock.patch.object(counters, "MAX_SHARDS", 4):
        hot = Client(REMOTE_ADDR="203.0.113.7")
        assert [hot.post("/login/").status_code for _ in range(4)] == [200] * 4
        for n in range(4):  # four others, each with more requests than the hot client
            other = Client(REMOTE_ADDR=f"198.51.100.{n}")
            assert [other.post("/login/").status_code for _ in range(5)] == [200] * 5
        assert [hot.post("/login/").status_code for _ in range(3)] == [200, 429, 429]


def test_a_flood_of_one_off_identities_does_not_push_out_a_busier_client(tmp_path):
    counter = rl.ShardedCounter(LocalKV(tmp_path / "kv.sqlite3"), background=False, list_budget=0, max_shards=50)
    now = time.time()
    for _ in range(4):
        counter.hit("p", "hot", 10, 3600, now)
    counter.flush()  # nothing left to write for "hot"
    for n in range(500):
        counter.hit("p", f"once-{n}", 10, 3600, now)
    assert counter.hit("p", "hot", 10, 3600, now)[0] == 5


# Other ways around a count


def test_head_requests_count_against_a_get_rule():
    # Django answers HEAD with the GET view (function views, and View.head = View.get), status and all.
    rule = {"path": r"^/api/items/$", "methods": ["GET"], "rate": "3/h", "key": "ip"}
    client = Client()
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}):
        codes = [client.head("/api/items/").status_code for _ in range(3)] + [client.get("/api/items/").status_code]
    assert codes == [200, 200, 200, 429]


def test_a_decorated_get_view_counts_head_requests():
    view = rl.ratelimit(rate="2/h", key="ip", method="GET", group="head-too")(lambda request: HttpResponse())
    factory = RequestFactory()
    view(factory.head("/"))
    view(factory.get("/"))
    with pytest.raises(Ratelimited):
        view(factory.head("/"))


WORKERS_CLIENT = "2a06:98c0:3600::103"  # what Cloudflare reports for a Worker on another zone calling this one


def test_a_worker_on_another_zone_cannot_pick_its_address_in_x_forwarded_for():
    # A Worker's fetch() sets X-Forwarded-For as it likes; Cloudflare appends the Worker's client address,
    # which lies in Cloudflare's own 2a06:98c0::/29. Walking past it would reach the Worker's choice.
    rule = {"path": r"^/login/$", "methods": ["POST"], "rate": "3/h", "key": "ip"}
    with override_settings(CFKV_RATELIMIT={"RULES": [rule], "TRUSTED_PROXIES": ["cloudflare"],
                                           "PROXY_HEADER": "X-Forwarded-For"}):
        codes = [Client(REMOTE_ADDR="172.70.1.1").post(
            "/login/", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, {WORKERS_CLIENT}").status_code for n in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert rl.client_ip("172.70.1.1", f"198.51.100.9, {WORKERS_CLIENT}",
                        trusted=rl.parse_networks(["cloudflare"])) == WORKERS_CLIENT


@pytest.mark.parametrize("planted", [-1000, True, 2.5, "5", None], ids=repr)
def test_a_namespace_writer_cannot_lower_or_raise_a_count_with_a_planted_shard(tmp_path, planted):
    kv = LocalKV(tmp_path / "kv.sqlite3")
    now = time.time()
    prefix = rl.shard_prefix("p", "hot", 3600, rl.window(now, 3600)[0])
    kv.put(prefix + "planted", "0", expiration_ttl=3600, metadata={"kind": "ratelimit", "count": planted})
    writer = rl.ShardedCounter(kv, background=False)
    for _ in range(3):
        writer.hit("p", "hot", 10, 3600, now)
    writer.flush()
    # Only a whole count above zero is a count: the planted shard adds nothing, and takes nothing away.
    assert rl.ShardedCounter(kv, background=False).hit("p", "hot", 10, 3600, now)[0] == 4
