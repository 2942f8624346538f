"""Pure logic of the rate limiter: rates, windows, rules, client identity, shards. No requests."""

import threading
import time

import pytest

from django_cfkv import clock as cfkv_clock
from django_cfkv import ratelimit as rl
from django_cfkv.exceptions import KVConnectionError
from django_cfkv.local import LocalKV

# Rates and windows


@pytest.mark.parametrize("rate, expected", [
    ("5/m", (5, 60)), ("100/10m", (100, 600)), ("1000/h", (1000, 3600)), ("10/s", (10, 1)),
    ("50000/d", (50000, 86400)), (" 7 / 2h ", (7, 7200)), ("1/1s", (1, 1)),
])
def test_parse_rate(rate, expected):
    assert rl.parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["", "5", "5/x", "0/m", "5/0m", "-1/m", "5/m/s", "five/m", None, 5, "5/05m",
                                  "1/\u0ce6d", "\u0665/m", "5/\uff11m"])  # digits of other scripts: int() reads them
def test_parse_rate_rejects_with_the_check_id(rate):
    with pytest.raises(rl.ConfigProblem) as info:
        rl.parse_rate(rate)
    assert info.value.id == "django_cfkv.E104"
    assert "5/m" in info.value.hint


def test_window_math():
    assert rl.window(0, 60) == (0, 0, 60)
    assert rl.window(59.999, 60) == (0, 0, 60)
    assert rl.window(60, 60) == (1, 60, 120)
    assert rl.window(1_700_000_123.5, 600) == (2_833_333, 1_699_999_800, 1_700_000_400)
    # Every process computes the same window from the clock alone.
    index, start, end = rl.window(1_700_000_000, 3600)
    assert start <= 1_700_000_000 < end and end - start == 3600 and start == index * 3600


# Client identity


CF_PEER = "173.245.48.10"  # inside Cloudflare's 173.245.48.0/20
TRUSTED = rl.parse_networks(["cloudflare", "10.0.0.0/8"])


def test_remote_addr_by_default_and_headers_ignored_without_trust():
    assert rl.client_ip("203.0.113.7") == "203.0.113.7"
    assert rl.client_ip("203.0.113.7", "198.51.100.1") == "203.0.113.7"


def test_spoofed_header_from_untrusted_peer_never_changes_the_client():
    assert rl.client_ip("203.0.113.7", "198.51.100.1", trusted=TRUSTED) == "203.0.113.7"
    assert rl.client_ip("203.0.113.7", "1.1.1.1, 10.0.0.2", trusted=TRUSTED) == "203.0.113.7"


def test_cf_connecting_ip_from_cloudflare_is_the_client():
    assert rl.client_ip(CF_PEER, "198.51.100.1", trusted=TRUSTED) == "198.51.100.1"
    assert rl.client_ip("2606:4700::1", "2001:db8::5", trusted=TRUSTED) == "2001:db8::5"


def test_x_forwarded_for_takes_the_rightmost_untrusted_address():
    # The client may prepend anything; only what trusted proxies appended counts.
    chain = "6.6.6.6, 198.51.100.1, 10.1.2.3"
    assert rl.client_ip("10.0.0.1", chain, trusted=TRUSTED) == "198.51.100.1"
    assert rl.client_ip("10.0.0.1", "10.9.9.9, 10.1.2.3", trusted=TRUSTED) == "10.9.9.9"


def test_hop_count():
    assert rl.client_ip("10.0.0.1", "6.6.6.6, 198.51.100.1", hops=1) == "198.51.100.1"
    assert rl.client_ip("10.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.9", hops=2) == "198.51.100.1"
    # A chain shorter than the configured hops did not come through the proxies.
    assert rl.client_ip("10.0.0.1", "198.51.100.1", hops=2) == "10.0.0.1"


def test_junk_left_of_the_proxies_entries_never_moves_the_count_to_the_edge():
    # Behind Cloudflare the peer is one of many edge addresses: counting junk headers under the
    # peer would spread one client over many counts. The walk from the right stops at the junk.
    edge = "162.158.1.1"
    assert rl.client_ip(edge, "x, 198.51.100.7", trusted=TRUSTED) == "198.51.100.7"
    assert rl.client_ip("162.158.9.9", "junk, 6.6.6.6, 198.51.100.7", trusted=TRUSTED) == "198.51.100.7"
    # Only trusted hops left of the junk: the last address the walk passed.
    assert rl.client_ip("10.0.0.1", "x, 10.9.9.9, 10.1.2.3", trusted=TRUSTED) == "10.9.9.9"
    assert rl.client_ip("10.0.0.1", "x, 198.51.100.7", hops=1) == "198.51.100.7"
    assert rl.client_ip("10.0.0.1", "x, 198.51.100.7, 10.0.0.9", hops=2) == "198.51.100.7"
    assert rl.client_ip("10.0.0.1", "198.51.100.7, x", hops=2) == rl.UNPARSABLE


@pytest.mark.parametrize("header", ["not-an-ip", "1.2.3.4, garbage", " , "])
def test_trusted_header_without_an_address_is_one_client_not_the_peer(header):
    assert rl.client_ip(CF_PEER, header, trusted=TRUSTED) == rl.UNPARSABLE
    assert rl.client_ip("162.158.1.1", header, trusted=TRUSTED) == rl.UNPARSABLE
    assert rl.client_ip("10.0.0.1", header, hops=1) == rl.UNPARSABLE


@pytest.mark.parametrize("header", [None, "", "  "])
def test_no_header_is_the_peer(header):
    assert rl.client_ip(CF_PEER, header, trusted=TRUSTED) == CF_PEER
    assert rl.client_ip("10.0.0.1", header, hops=1) == "10.0.0.1"


def test_unparsable_remote_addr_is_kept_as_text():
    assert rl.client_ip(None) == "unknown"
    assert rl.client_ip("unix-socket") == "unix-socket"


def test_cloudflare_ranges_are_valid_and_complete():
    networks = rl.parse_networks(["cloudflare"])
    assert len(networks) == len(rl.CLOUDFLARE_IPV4) + len(rl.CLOUDFLARE_IPV6) == 22
    assert {n.version for n in networks} == {4, 6}


@pytest.mark.parametrize("bad", ["10.0.0.0/8", ["10.0.0.0/33"], ["nope"], [None]])
def test_bad_trusted_proxies(bad):
    with pytest.raises(rl.ConfigProblem) as info:
        rl.parse_networks(bad)
    assert info.value.id == "django_cfkv.E108"


def test_ipv6_grouped_by_64_and_configurable():
    assert rl.group_ip("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert rl.group_ip("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert rl.group_ip("2001:db8:1:3::1") != rl.group_ip("2001:db8:1:2::1")
    assert rl.group_ip("2001:db8:1:2:aaaa::1", ipv6_prefix=48) == "2001:db8:1::/48"
    assert rl.group_ip("2001:db8::1", ipv6_prefix=128) == "2001:db8::1"
    assert rl.group_ip("203.0.113.7") == "203.0.113.7"
    assert rl.group_ip("203.0.113.7", ipv4_prefix=24) == "203.0.113.0/24"
    # An IPv4-mapped IPv6 address is the IPv4 client.
    assert rl.group_ip("::ffff:203.0.113.7") == "203.0.113.7"


def test_proxy_header_names():
    assert rl.meta_name("CF-Connecting-IP") == rl.meta_name("HTTP_CF_CONNECTING_IP") == "HTTP_CF_CONNECTING_IP"
    limiter = rl.Limiter({"TRUSTED_PROXIES": ["cloudflare"], "PROXY_HEADER": "x-forwarded-for"})
    meta = {"REMOTE_ADDR": CF_PEER, "HTTP_X_FORWARDED_FOR": "6.6.6.6, 2001:db8:0:7::1"}
    assert limiter.client_address(meta) == "2001:db8:0:7::/64"


def test_client_hash_is_stable_short_and_hides_the_identity():
    h = rl.client_hash("ip:203.0.113.7")
    assert h == rl.client_hash("ip:203.0.113.7") and len(h) == 16
    assert set(h) <= set("0123456789abcdef") and h != rl.client_hash("ip:203.0.113.8")


def test_client_hash_is_keyed_with_the_secret_key(settings):
    import hashlib

    identity = "user:7"  # small ids and IPv4 addresses are few enough to try them all
    unkeyed = hashlib.sha256(identity.encode()).hexdigest()[:16]
    settings.SECRET_KEY = "one-secret"
    first = rl.client_hash(identity)
    assert first != unkeyed and first == rl.client_hash(identity)
    settings.SECRET_KEY = "another-secret"
    assert rl.client_hash(identity) not in (first, unkeyed)  # a new SECRET_KEY starts fresh counts


# Rules and keys


def test_compile_rule():
    rule = rl.compile_rule({"path": r"^/login/$", "methods": ["post"], "rate": "5/m", "key": "ip"})
    assert (rule.limit, rule.period, rule.key, rule.methods) == (5, 60, "ip", frozenset({"POST"}))
    assert rule.matches("/login/", "POST") and not rule.matches("/login/", "GET")
    assert not rule.matches("/login/x", "POST")
    assert rule.name.startswith("r") and rule.name == rl.compile_rule(
        {"path": r"^/login/$", "methods": ["post"], "rate": "5/m", "key": "ip"}).name
    assert rl.compile_rule({"rate": "1/s", "group": "api"}).name == "api"
    assert rl.compile_rule({"rate": "1/s"}).matches("/anything", "DELETE")


@pytest.mark.parametrize("key, kind, arg", [
    ("ip", "ip", None), ("user", "user", None), ("user_or_ip", "user_or_ip", None),
    ("header:X-Api-Key", "header", "X-Api-Key"), ("get:q", "get", "q"), ("post:email", "post", "email"),
    ("tests.ratelimit_urls.api_key", "callable", None),
])
def test_compile_key(key, kind, arg):
    got_kind, got_arg = rl.compile_key(key)
    assert got_kind == kind
    if kind == "callable":
        assert callable(got_arg)
    else:
        assert got_arg == arg


def test_policy_name_of_a_callable_key_is_the_same_in_every_process():
    import subprocess
    import sys

    from tests.ratelimit_urls import api_key

    spec = {"path": r"^/api/", "rate": "5/m"}
    name = rl.compile_rule({**spec, "key": api_key}).name
    # The callable and its dotted path name one policy, whatever the function's address.
    assert name == rl.compile_rule({**spec, "key": "tests.ratelimit_urls.api_key"}).name
    code = ("from django_cfkv.ratelimit import compile_rule; from tests.ratelimit_urls import api_key; "
            "print(compile_rule({'path': r'^/api/', 'rate': '5/m', 'key': api_key}).name)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == name


@pytest.mark.parametrize("spec, check_id", [
    ("not a dict", "django_cfkv.E102"),
    ({"path": "^/x/$"}, "django_cfkv.E102"),
    ({"rate": "5/m", "paht": "^/x/$"}, "django_cfkv.E102"),
    ({"rate": "5/mm"}, "django_cfkv.E104"),
    ({"rate": "5/m", "path": "(unclosed"}, "django_cfkv.E103"),
    ({"rate": "5/m", "key": "cookie:x"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "header:"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "post:"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "param:email"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "no.such.module.func"}, "django_cfkv.E105"),
    ({"rate": "5/m", "methods": [1]}, "django_cfkv.E106"),
    ({"rate": "5/m", "group": "has space"}, "django_cfkv.E107"),
    ({"rate": "5/m", "group": "a:b"}, "django_cfkv.E107"),
])
def test_bad_rules_name_their_check_id(spec, check_id):
    with pytest.raises(rl.ConfigProblem) as info:
        rl.compile_rule(spec, 0)
    assert info.value.id == check_id


def test_compile_settings_keeps_good_rules_and_reports_bad_ones():
    options, rules, problems = rl.compile_settings({
        "RULES": [{"rate": "5/m", "group": "good"}, {"rate": "bad"}],
        "TRUSTED_PROXIES": ["cloudflare"], "PROXY_HEADER": "CF-Connecting-IP", "IPV6_PREFIX": 56,
    })
    assert [r.name for r in rules] == ["good"]
    assert [p.id for p in problems] == ["django_cfkv.E104"]
    assert options["IPV6_PREFIX"] == 56 and len(options["TRUSTED_PROXIES"]) == 22


@pytest.mark.parametrize("raw, check_id", [
    ([], "django_cfkv.E101"),
    ({"FAIL_OPNE": True}, "django_cfkv.E101"),
    ({"FAIL_OPEN": "yes"}, "django_cfkv.E101"),
    ({"RULES": {"rate": "5/m"}}, "django_cfkv.E102"),
    ({"TRUSTED_PROXIES": ["999.0.0.0/8"]}, "django_cfkv.E108"),
    ({"TRUSTED_PROXIES": [True]}, "django_cfkv.E108"),
    ({"TRUSTED_PROXIES": [167772160]}, "django_cfkv.E108"),
    ({"PROXY_HEADER": "X-Forwarded-For"}, "django_cfkv.E109"),
    ({"PROXY_COUNT": -1}, "django_cfkv.E109"),
    ({"IPV6_PREFIX": 129}, "django_cfkv.E110"),
    ({"IPV4_PREFIX": 0}, "django_cfkv.E110"),
    ({"VIEW": "tests.nowhere.view"}, "django_cfkv.E113"),
    ({"SYNC_INTERVAL": 0.5}, "django_cfkv.E114"),
    ({"LIST_BUDGET": -1}, "django_cfkv.E116"),
    ({"LIST_BUDGET": "2/s"}, "django_cfkv.E116"),
    ({"LIST_BUDGET": True}, "django_cfkv.E116"),
])
def test_bad_options(raw, check_id):
    _, _, problems = rl.compile_settings(raw)
    assert check_id in [p.id for p in problems]


def test_good_options_have_no_problems():
    _, _, problems = rl.compile_settings({
        "ALIAS": "default", "FAIL_OPEN": False, "PROXY_HEADER": "X-Forwarded-For", "PROXY_COUNT": 1,
        "RULES": [{"path": r"^/login/$", "methods": ["POST"], "rate": "5/m", "key": "ip"}],
        "VIEW": "tests.ratelimit_urls.custom_limited", "LIST_BUDGET": 0.25,
    })
    assert problems == []


# Shards


def test_describe_shard():
    info = rl.describe_shard("rl:login:0123456789abcdef:60:28333333:a1b2c3d4",
                             {"kind": "ratelimit", "expires": 1_700_000_040, "count": 4, "limit": 5})
    assert info["policy"] == "login" and info["client"] == "0123456789abcdef"
    assert (info["period"], info["window"], info["process"], info["count"], info["limit"]) == (
        60, 28333333, "a1b2c3d4", 4, 5)
    assert (info["window_start"], info["window_end"], info["expired"]) == (1_699_999_980, 1_700_000_040, True)
    # From the value when there is no metadata, and the strict-mode cache key form.
    assert rl.describe_shard("rl:g/x.y:ab:3600:1", None, b"7")["count"] == 7
    assert rl.describe_shard("rl:g:ab:3600:1")["process"] is None
    assert rl.describe_shard("session:abc", {"kind": "session"}) is None
    assert rl.describe_shard("rl:garbage") is None


class RecordingKV(LocalKV):
    """A LocalKV that records when each call happens, and can be switched off."""

    def __init__(self, path):
        super().__init__(path)
        self.writes, self.lists, self.down = [], [], False
        self._rec_lock = threading.Lock()

    def put_many(self, items):
        if self.down:
            raise KVConnectionError("down")
        with self._rec_lock:
            self.writes.append((time.monotonic(), [item["key"] for item in items]))
        return super().put_many(items)

    def list_keys(self, prefix=None, limit=1000, cursor=None):
        if self.down:
            raise KVConnectionError("down")
        with self._rec_lock:
            self.lists.append((time.monotonic(), prefix))
        return super().list_keys(prefix=prefix, limit=limit, cursor=cursor)


def test_counter_sums_other_processes_shards_and_never_writes_theirs(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    a, b = rl.ShardedCounter(kv, background=False), rl.ShardedCounter(kv, background=False)
    now = time.time()
    assert a.hit("p", "c", 10, 3600, now)[:1] == (1,)
    assert a.hit("p", "c", 10, 3600, now)[0] == 2
    assert a.flush() == 1
    assert b.hit("p", "c", 10, 3600, now)[0] == 3  # b's first read sees a's shard
    assert b.flush() == 0  # a client seen once by a process costs no write
    assert b.hit("p", "c", 10, 3600, now)[0] == 4
    b.flush()
    keys = {info.name: info.metadata for info in kv.iter_keys(prefix="rl:p:c:")}
    assert len(keys) == 2 and {m["count"] for m in keys.values()} == {2}
    written = [key for _, batch in kv.writes for key in batch]
    writers = [key.rsplit(":", 1)[1] for key in written]
    assert writers == [f"{a.process}.0", f"{b.process}.0"]
    for name, meta in keys.items():
        assert meta["kind"] == "ratelimit" and meta["expires"] == rl.window(now, 3600)[2]
        assert rl.describe_shard(name, meta)["count"] == meta["count"]
    a.close()
    b.close()


def test_counter_respects_one_write_and_one_read_per_second(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv)
    deadline = time.monotonic() + 2.3

    def hammer():
        while time.monotonic() < deadline:
            counter.hit("p", "c", 10**6, 3600, time.time())

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counter.close()
    counter._thread.join(3)
    total = counter._shards[next(iter(counter._shards))].local
    assert total > 100  # many requests...
    assert 1 <= len(kv.lists) <= 4 and 1 <= len(kv.writes) <= 5  # ...few calls
    times = [t for t, _ in kv.lists]
    assert all(b - a >= 0.99 for a, b in zip(times, times[1:], strict=False))
    write_times = [t for t, _ in kv.writes]  # including close()'s final flush
    assert all(b - a >= 0.99 for a, b in zip(write_times, write_times[1:], strict=False))
    final = next(kv.iter_keys(prefix="rl:p:c:"))
    assert final.metadata["count"] == total  # nothing lost


def test_list_calls_share_one_budget_however_many_clients(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    writer, counter = rl.ShardedCounter(kv, background=False), rl.ShardedCounter(
        kv, background=False, list_budget=2)
    now = time.time()
    for _ in range(3):
        writer.hit("p", "known", 10, 3600, now)
    writer.flush()
    kv.lists.clear()
    start = time.monotonic()
    assert counter.hit("p", "known", 10, 3600, now)[0] == 4  # within the budget: reads the other shard
    counts = [counter.hit("p", f"client-{n}", 10, 3600, now)[0] for n in range(300)]
    elapsed = time.monotonic() - start
    assert counts == [1] * 300  # past the budget: decided from the local count, without waiting for KV
    assert len(kv.lists) <= 2 + 2 * elapsed  # the burst, then 2 per second
    # Past the budget, a known client keeps the other processes' count it last read.
    assert counter.hit("p", "known", 10, 3600, now)[0] == 5
    # Clients seen once cost no write; the one seen twice does.
    assert counter.flush() == 1 and kv.writes[-1][1] == [f"rl:p:known:3600:{int(now // 3600)}:{counter.process}.0"]


def test_no_list_budget_never_reads(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0)
    assert [counter.hit("p", "c", 10, 3600, time.time())[0] for _ in range(3)] == [1, 2, 3]
    assert kv.lists == []


def test_shards_in_memory_are_bounded_and_pending_counts_kept_first(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0, max_shards=50)
    now = time.time()
    counter.hit("p", "closed", 10, 60, now - 120)  # an old window, least recently hit
    counter.hit("p", "hot", 10, 3600, now)
    counter.hit("p", "hot", 10, 3600, now)  # two requests: a count to write
    for n in range(200):
        counter.hit("p", f"once-{n}", 10, 3600, now)
    assert len(counter._shards) == 50
    kept = {prefix.split(":")[2] for prefix in counter._shards}
    assert "hot" in kept and "closed" not in kept and "once-0" not in kept and "once-199" in kept
    assert counter.hit("p", "hot", 10, 3600, now)[0] == 3
    assert counter.flush() == 1


def test_close_waits_for_the_write_spacing_only_in_the_background(tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr(cfkv_clock, "sleep", slept.append)
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    now = time.time()
    counters = (rl.ShardedCounter(kv, background=False), rl.ShardedCounter(kv, per_request=True),
                rl.ShardedCounter(kv))
    for counter in counters:
        for _ in range(2):
            counter.hit("p", counter.process, 10, 3600, now)
        counter.flush()
        counter.hit("p", counter.process, 10, 3600, now)  # pending, less than a second after its write
        counter.close()
    # Only the background counter (production) waits, within KV's one write per second per key.
    assert len(slept) == 1 and 0 < slept[0] <= 1.0
    final = {info.name.rsplit(":", 1)[1].split(".")[0]: info.metadata["count"] for info in kv.iter_keys(prefix="rl:p:")}
    # background=False writes only what flush() allows; per request, everything is written.
    assert (final[counters[0].process], final[counters[1].process]) == (2, 3)


def test_per_request_counter_reads_once_and_writes_every_changed_request(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, per_request=True, list_budget=0)
    now = time.time()
    writes = []
    for _ in range(4):
        counter.hit("p", "c", 10, 3600, now)
        counter.after_request()
        writes.append(len(kv.writes))
    assert len(kv.lists) == 1 and writes == [0, 1, 2, 3] and counter._thread is None
    counter.close()
    assert len(kv.writes) == 3


def test_counter_counts_locally_while_kv_is_down(tmp_path, caplog):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    kv.down = True
    counter = rl.ShardedCounter(kv, background=False)
    now = time.time()
    results = [counter.hit("p", "c", 2, 3600, now) for _ in range(3)]
    assert [(count, ok) for count, _, ok in results] == [(1, False), (2, False), (3, False)]
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1  # logged once, not per request
    assert counter.flush() == 0 and kv.writes == []  # the write waits for KV to come back


def test_cache_counter_is_exact():
    from django.core.cache import caches

    cache = caches["default"]
    cache.clear()
    counter = rl.CacheCounter(cache)
    now = time.time()
    counts = []
    threads = [threading.Thread(target=lambda: counts.append(counter.hit("p", "c", 5, 60, now)[0]))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == list(range(1, 21))
    assert counter.hit("p", "c", 5, 60, now + 60)[0] == 1  # next window


def test_limiter_usage_and_fail_policy(tmp_path, settings):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    clock = [1_700_000_010.0]
    limiter = rl.Limiter({"RULES": [{"rate": "2/m", "group": "g"}]}, clock=lambda: clock[0])
    rule = limiter.rules[0]
    first, second, third = (limiter.hit(rule, "ip:1.2.3.4") for _ in range(3))
    assert (first.count, first.remaining, first.limited, first.reset) == (1, 1, False, 30)
    assert (second.limited, third.limited, third.remaining) == (False, True, 0)
    clock[0] += 30  # the next window
    assert limiter.hit(rule, "ip:1.2.3.4").count == 1
    limiter.close()

    class Broken:
        def hit(self, *args):
            raise RuntimeError("store exploded")

    for fail_open in (True, False):
        limiter = rl.Limiter({"FAIL_OPEN": fail_open, "RULES": [{"rate": "2/m"}]})
        limiter._counter = Broken()
        assert limiter.hit(limiter.rules[0], "ip:1.2.3.4").limited is (not fail_open)


def test_a_cap_below_one_shard_still_counts(tmp_path):
    counter = rl.ShardedCounter(LocalKV(tmp_path / "kv.sqlite3"), background=False, list_budget=0, max_shards=0)
    assert [counter.hit("p", "c", 5, 3600, time.time())[0] for _ in range(3)] == [1, 2, 3]


# What a failed KV call makes the counter do


class _Refusing(LocalKV):
    """A store whose list calls are refused with a given error."""

    error = None

    def list_keys(self, prefix=None, limit=1000, cursor=None):
        raise self.error


@pytest.mark.parametrize("account_wide, paused_at_least", [(False, 0), (True, 200)])
def test_only_a_spent_account_quota_keeps_the_counter_off_kv_for_its_retry_after(tmp_path, account_wide,
                                                                                  paused_at_least):
    from django_cfkv.exceptions import KVRateLimitError

    kv = _Refusing(tmp_path / "kv.sqlite3")
    kv.error = KVRateLimitError("429", status=429, retry_after=240, account_wide=account_wide)
    counter = rl.ShardedCounter(kv, background=False)
    started = time.monotonic()
    counter.hit("p", "c", 10, 60, time.time())
    pause = counter._down_until - started
    # A 429 about one key or call (one write per second) pauses only for the usual outage backoff.
    assert pause >= paused_at_least
    assert pause <= (rl.OUTAGE_BACKOFF + 1 if not account_wide else 241)
    counter.close()


class _SlowWrites(RecordingKV):
    """Bulk writes that take a while to be answered, as over a slow link."""

    def put_many(self, items):
        result = super().put_many(items)
        time.sleep(0.6)
        return result


def test_writes_of_a_shard_are_spaced_from_when_the_last_one_was_answered(tmp_path):
    """KV counts one write per second per key from the write's arrival, which may be as late as its answer."""
    kv = _SlowWrites(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, interval=1.0)
    now = time.time()
    counter.hit("p", "c", 100, 3600, now)
    counter.hit("p", "c", 100, 3600, now)
    started = time.monotonic()
    assert counter.flush() == 1  # answered 0.6 s later
    counter.hit("p", "c", 100, 3600, now)
    time.sleep(max(0.0, started + 1.1 - time.monotonic()))  # 1.1 s after it was sent, 0.5 s after its answer
    assert counter.flush() == 0
    time.sleep(0.6)
    assert counter.flush() == 1
    counter.close()
