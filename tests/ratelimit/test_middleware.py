"""RateLimitMiddleware through Django's test client, in sync and async stacks: which requests count, strict
mode, and failures that never become a 500."""

import contextlib
import logging
import threading

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.client import KVClient
from django_cfkv.middleware import RateLimitMiddleware
from django_cfkv.ratelimit import count_per_request

from .helpers import LOGIN_RULE, limits, statuses

pytestmark = pytest.mark.usefixtures("site")


# Sync and async stacks


def test_sync_stack_limits_matching_requests_only():
    client = Client()
    with limits():
        assert statuses(client, 5) == [200, 200, 200, 429, 429]
        assert statuses(client, 2, method="get") == [200, 200]  # GET is not in the rule
        assert statuses(client, 2, path="/open/") == [200, 200]


def test_async_stack():
    async def run():
        client = AsyncClient()
        return [(await client.post("/login/")) for _ in range(4)]

    with limits():
        responses = async_to_sync(run)()
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[3]["Retry-After"].isdigit()


def test_middleware_adapts_to_the_stack():
    def sync_view(request):
        return HttpResponse()

    async def async_view(request):
        return HttpResponse()

    assert not iscoroutinefunction(RateLimitMiddleware(sync_view))
    assert iscoroutinefunction(RateLimitMiddleware(async_view))


def test_every_matching_rule_counts_and_the_strictest_decides():
    rules = [{"path": r"^/api/", "rate": "5/h", "group": "api"},
             {"path": r"^/api/items/$", "methods": ["POST"], "rate": "2/h", "group": "items"}]
    client = Client()
    with override_settings(CFKV_RATELIMIT={"RULES": rules}):
        assert statuses(client, 3, path="/api/items/") == [200, 200, 429]
        response = client.get("/api/items/")
    # The GET matched "api" only, which has counted all four requests.
    assert response.status_code == 200 and response["RateLimit"].startswith('"api";r=1;')


def test_disabled():
    with limits(ENABLED=False):
        assert statuses(Client(), 5) == [200] * 5


# Strict mode


def test_strict_mode_counts_exactly_with_a_cache():
    from django.core.cache import caches

    caches["default"].clear()
    with limits(CACHE="default"):
        results = []
        barrier = threading.Barrier(12)

        def hit():
            barrier.wait()
            results.append(Client().post("/login/").status_code)

        threads = [threading.Thread(target=hit) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == [200] * 3 + [429] * 9


# Failure


def unreachable_alias(port):
    return {"BACKEND": "cloudflare", "ACCOUNT_ID": "a" * 32, "NAMESPACE_ID": "n" * 32, "API_TOKEN": "secret-token-xyz",
            "BASE_URL": f"http://127.0.0.1:{port}/client/v4", "MAX_RETRIES": 0, "TIMEOUT": 1}


def test_unreachable_kv_fails_open_and_logs(caplog, closed_port):
    with override_settings(CFKV={"default": unreachable_alias(closed_port)}), limits():
        with caplog.at_level(logging.ERROR, logger="django_cfkv.ratelimit"):
            codes = statuses(Client(), 5, path="/login/")
    # Allowed, but this process still enforces its own count.
    assert codes == [200, 200, 200, 429, 429]
    errors = [r for r in caplog.records if "Rate limiting could not" in r.getMessage()]
    assert len(errors) == 1 and "could not read Workers KV" in errors[0].getMessage()
    assert "secret-token-xyz" not in caplog.text


def test_unreachable_kv_fails_closed_when_asked(closed_port):
    with override_settings(CFKV={"default": unreachable_alias(closed_port)}), limits(FAIL_OPEN=False):
        response = Client().post("/login/")
        assert response.status_code == 429 and response["Retry-After"]
        assert Client().get("/login/").status_code == 200  # rules that do not match are untouched


def test_broken_key_function_never_becomes_500_but_a_missing_cache_is_an_error():
    rule = {"path": r"^/login/$", "rate": "3/h", "key": "tests.ratelimit.urls.broken_key"}
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}):
        assert statuses(Client(), 2) == [200, 200]
    with override_settings(CFKV_RATELIMIT={"RULES": [rule], "FAIL_OPEN": False}):
        assert statuses(Client(), 1) == [429]
    with limits(CACHE="no-such-cache"):  # a mistake in settings, not an outage: FAIL_OPEN does not hide it
        with pytest.raises(ImproperlyConfigured, match="no-such-cache"):
            statuses(Client(), 1)


@pytest.mark.django_db
@pytest.mark.parametrize("fail_open", [True, False])
def test_a_mistake_met_reading_the_user_is_raised_in_either_stack(settings, fail_open):
    """A setting to fix found while a "user" rule reads the session (here SESSION_CFKV_ALIAS naming no
    alias) is raised in both stacks, never passed or answered 429 as an outage would be."""
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    settings.SESSION_CFKV_ALIAS = "no-such-alias"
    rule = {"path": r"^/login/$", "methods": ["POST"], "rate": "3/m", "key": "user_or_ip"}
    cookie = "abcdefghijklmnopqrstuvwxyz012345"  # a well-formed session id: the session is read
    sync_client, async_client = Client(), AsyncClient()
    sync_client.cookies["sessionid"] = async_client.cookies["sessionid"] = cookie
    with override_settings(CFKV_RATELIMIT={"FAIL_OPEN": fail_open, "RULES": [rule]}):
        with pytest.raises(ImproperlyConfigured, match="no-such-alias"):
            sync_client.post("/login/")
        with pytest.raises(ImproperlyConfigured, match="no-such-alias"):
            async_to_sync(async_client.post)("/login/")


def test_invalid_rules_are_skipped_at_request_time(caplog):
    with override_settings(CFKV_RATELIMIT={"RULES": [{"path": "(", "rate": "1/h"}, LOGIN_RULE]}):
        assert statuses(Client(), 4) == [200, 200, 200, 429]
    assert "CFKV_RATELIMIT['RULES'][0] has an invalid path regex" in caplog.text


# The async stack counts natively: the same decisions and KV calls as the sync stack, no blocking call

BLOCKING = ("get", "get_with_metadata", "get_metadata", "get_many", "put", "put_many", "delete", "delete_many",
            "list_keys")


@pytest.fixture
def blocking_calls(monkeypatch):
    """Return ``blocking_calls(refuse)``: a context in which each blocking KVClient call is recorded and fails
    (an async path that ran its blocking namesake in a thread shows up in the list it returns)."""
    @contextlib.contextmanager
    def refuse():
        made = []
        with monkeypatch.context() as patch:
            for name in BLOCKING:
                patch.setattr(KVClient, name, _refused(name, made))
            yield made

    return refuse


def _refused(name, made):
    def call(self, *args, **kwargs):
        made.append(name)
        raise AssertionError(f"KVClient.{name}() was called on an async path")
    return call


@contextlib.contextmanager
def counted_per_request():
    count_per_request(True)  # each request's writes happen before its response: the same calls every run
    try:
        yield
    finally:
        count_per_request(False)


def _run_async(paths, method="post"):
    async def run():
        client = AsyncClient()
        return [(await getattr(client, method)(path)).status_code for path in paths]

    return async_to_sync(run)()


def test_async_stack_counts_natively_with_the_calls_of_the_sync_stack(cfkv_emulator, cfkv_calls, blocking_calls):
    seen = {}
    for stack in ("sync", "async"):
        alias = cfkv_emulator.alias_settings(MAX_RETRIES=0)  # a fresh namespace: both count from zero
        with override_settings(CFKV={"default": alias}, CFKV_RATELIMIT={"RULES": [LOGIN_RULE]},
                               MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"]), counted_per_request():
            cfkv_calls.reset()
            if stack == "sync":
                got = statuses(Client(), 5)
            else:
                with blocking_calls() as made:
                    got = _run_async(["/login/"] * 5)
                assert made == []
            seen[stack] = got, cfkv_calls.counts
    assert seen["async"] == seen["sync"]
    assert seen["sync"][0] == [200, 200, 200, 429, 429] and seen["sync"][1]["list"] == 1


def test_async_stack_counts_a_user_key_by_the_awaited_user(db, django_user_model):
    """In an async stack the user is read with ``await request.auser()``: ``request.user`` would query the
    database on the event loop, which Django refuses (and the limiter would count nothing)."""
    user = django_user_model.objects.create_user("ada")
    rule = {"path": r"^/login/$", "methods": ["POST"], "rate": "2/h", "key": "user"}

    async def run():
        client = AsyncClient()
        await client.aforce_login(user)
        signed_in = [(await client.post("/login/")).status_code for _ in range(3)]
        return signed_in, (await AsyncClient().post("/login/")).status_code

    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}):
        assert async_to_sync(run)() == ([200, 200, 429], 200)  # an anonymous request has no user to count


def test_async_stack_counts_the_user_login_or_logout_set_over_a_stale_auser(db, django_user_model):
    """A proxy's RemoteUserMiddleware logs users in and out after AuthenticationMiddleware; on Django 5.2 that
    leaves ``request.auser()`` answering with the user it read before. The user ``request.user`` names is
    counted, in either stack."""
    from django.contrib.auth.models import AnonymousUser

    ann, bob = (django_user_model.objects.create_user(name) for name in ("ann", "bob"))
    rule = rl.compile_rule({"rate": "1/h", "key": "user", "group": "stale-auser"})
    factory = RequestFactory()

    def request(user, stale):
        made = factory.post("/login/")
        made.user = user

        async def auser():
            return stale

        made.auser = auser
        return made

    assert rl.count_request(request(bob, ann), [rule])[0].count == 1  # blocking: request.user, bob
    assert async_to_sync(rl.acount_request)(request(bob, ann), [rule], increment=False)[0].count == 1
    assert async_to_sync(rl.acount_request)(request(ann, bob), [rule], increment=False)[0].count == 0
    # logged out: no user to count, as for any anonymous request (a "user" key limits signed-in users only)
    assert async_to_sync(rl.acount_request)(request(AnonymousUser(), bob), [rule], increment=False) == []
