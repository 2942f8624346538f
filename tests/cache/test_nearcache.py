"""The per-process near cache: bounds, age, invalidation, sharing, fork; its use by sessions;
and connection reuse by the cache and sessions under threads."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import caches

from django_cfkv import clock as cfkv_clock
from django_cfkv import get_kv, metadata
from django_cfkv.cache.codec import EntryCodec
from django_cfkv.exceptions import KVTimeout
from django_cfkv.nearcache import MISSING, UNSETTLED_SECONDS, NearCache, near_cache
from django_cfkv.sessions import SessionStore
from django_cfkv.testing import connections_opened


@pytest.fixture
def clock(monkeypatch):
    """The package's monotonic clock, moved by hand: ``clock(5)``."""
    now = [1000.0]
    monkeypatch.setattr(cfkv_clock, "monotonic", lambda: now[0])

    def advance(seconds):
        now[0] += seconds

    return advance


def filled(near, key, raw):
    near.fill(key, raw, near.generation())


# The structure


def test_hit_miss_and_known_missing():
    near = NearCache(10)
    assert near.get("a") is MISSING
    filled(near, "a", b"1")
    filled(near, "gone", None)
    assert near.get("a") == b"1"
    assert near.get("gone") is None  # a known miss, not MISSING
    assert (near.hits, near.misses) == (2, 1)


def test_entries_age_out_after_timeout(clock):
    near = NearCache(5)
    filled(near, "a", b"1")
    clock(4.9)
    assert near.get("a") == b"1"
    clock(0.1)
    assert near.get("a") is MISSING
    assert len(near) == 0


def test_max_entries_drops_least_recently_used():
    near = NearCache(10, max_entries=2)
    filled(near, "a", b"1")
    filled(near, "b", b"2")
    near.get("a")  # a is now the most recently used
    filled(near, "c", b"3")
    assert near.get("b") is MISSING
    assert near.get("a") == b"1" and near.get("c") == b"3"


def test_max_bytes_bounds_keys_and_values():
    near = NearCache(10, max_bytes=100)
    filled(near, "a", b"x" * 60)
    filled(near, "b", b"y" * 30)
    filled(near, "c", b"z" * 30)  # 31 + 31 + 61 > 100: a goes
    assert near.get("a") is MISSING
    assert near._bytes == 62
    filled(near, "big", b"w" * 200)  # never kept
    assert near.get("big") is MISSING and near.get("b") == b"y" * 30


def test_invalidate_forgets_and_refuses_a_read_that_started_before():
    near = NearCache(10)
    filled(near, "a", b"old")
    generation = near.generation()  # a read of "a" starts...
    near.invalidate("a")  # ...this process writes "a"...
    near.fill("a", b"old", generation)  # ...the read ends with the old value: not kept
    assert near.get("a") is MISSING
    filled(near, "a", b"new")
    near.invalidate_many(["a", "never-kept"])
    assert near.get("a") is MISSING
    filled(near, "b", b"1")
    near.clear()
    assert len(near) == 0 and near._bytes == 0


def test_a_write_that_got_no_answer_keeps_reads_of_its_keys_out_for_a_while(clock):
    """It may still land: a read made meanwhile may be of the old value, so none is kept until KV has surely
    applied it (UNSETTLED_SECONDS); other keys are kept as before."""
    near = NearCache(600)
    filled(near, "k", b"old")
    near.unsettle(["k"])
    assert near.get("k") is MISSING
    filled(near, "k", b"old")  # read while the write may still land
    filled(near, "other", b"o")
    assert near.get("k") is MISSING and near.get("other") == b"o"
    clock(UNSETTLED_SECONDS)
    filled(near, "k", b"new")
    assert near.get("k") == b"new"


def test_writes_without_answers_in_an_outage_keep_the_near_cache_bounded(clock):
    """Past max_entries keys awaiting their writes' fate, no read of any key is kept for a while, rather than
    a map that grows with the outage."""
    near = NearCache(600, max_entries=10)
    for i in range(25):
        near.unsettle([f"session-{i}"])
        assert len(near._unsettled) <= 10
    filled(near, "never-written", b"v")
    assert near.get("never-written") is MISSING
    clock(UNSETTLED_SECONDS)
    filled(near, "never-written", b"v")
    near.unsettle(["k"])
    clock(UNSETTLED_SECONDS / 2)
    near.unsettle(["j"])
    clock(UNSETTLED_SECONDS / 2)
    filled(near, "k", b"v")
    filled(near, "j", b"v")
    assert near.get("never-written") == b"v" and near.get("k") == b"v" and near.get("j") is MISSING
    assert list(near._unsettled) == ["j"]  # the settled ones are forgotten, oldest first


def _cancelled_or_timed_out_write(mode):
    """A server whose PUTs take 0.5 s to answer and then apply; a read answers what is stored."""
    from tests.support.hostile import HostileServer, envelope, reply

    state, landed = {}, threading.Event()
    state["received"] = threading.Event()

    def answer(conn, request):
        if request.method == "PUT":
            state["received"].set()
            time.sleep(0.5)  # KV takes its time; the write lands all the same
            state["raw"] = state["next"]
            landed.set()
            reply(conn, 200, envelope(None))
        else:
            reply(conn, 200, state["raw"])

    return HostileServer(answer), state, landed


@pytest.mark.parametrize("mode", ["blocking, timed out", "awaited, cancelled"])
def test_a_write_that_got_no_answer_leaves_no_old_value_near(settings, mode):
    """A write that timed out (blocking) or whose caller was cancelled (awaited: under ASGI a client that goes
    away cancels the view) may still reach KV: a read made meanwhile must not keep the old value near."""
    import asyncio

    from django_cfkv.cache import CloudflareKVCache
    from tests.support.faults import ACCOUNT, NS, TOKEN

    server, state, landed = _cancelled_or_timed_out_write(mode)
    with server:
        settings.CFKV = {**settings.CFKV, "slow": {"ACCOUNT_ID": ACCOUNT, "NAMESPACE_ID": NS, "API_TOKEN": TOKEN,
                                                   "BASE_URL": server.base_url, "MAX_RETRIES": 0, "TIMEOUT": 0.2}}
        cache = CloudflareKVCache("slow", {"OPTIONS": {"NEAR_CACHE_TIMEOUT": 600}})
        codec, kv_key = cache._entries.codec, cache.kv_key("k")
        state["raw"] = codec.dumps("old", None, kv_key=kv_key).encode()
        state["next"] = codec.dumps("new", None, kv_key=kv_key).encode()
        assert cache.get("k") == "old"  # near now
        if mode.startswith("blocking"):
            with pytest.raises(KVTimeout):
                cache.set("k", "new", None)
            cache.get("k")  # a read while the write may still be in flight at KV (of "old", unless it landed)
        else:
            async def view():
                write = asyncio.ensure_future(cache.aset("k", "new", None))
                assert await asyncio.to_thread(state["received"].wait, 5)
                write.cancel()  # the PUT is on its way
                await asyncio.gather(write, return_exceptions=True)
                await cache.aget("k")  # a read while the write may still be in flight at KV

            asyncio.run(view())
        assert landed.wait(5)
        assert cache.get("k") == "new"


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="above 0"):
        NearCache(10, max_entries=0)


def test_registry_is_process_wide_and_off_at_zero():
    assert near_cache("space", 0) is None
    assert near_cache("space", None) is None
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: near_cache("space", 5), range(8)))
    assert all(item is found[0] for item in found)
    assert near_cache("other", 5) is not found[0]
    assert near_cache("space", 7) is not found[0]  # new bounds: a new near cache


def test_settings_changes_empty_every_near_cache(settings):
    near = near_cache("space", 5)
    filled(near, "a", b"1")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert near.get("a") is MISSING
    assert near_cache("space", 5) is not near


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# It forks as a pre-fork server (gunicorn) does, with the suite's threads running: the child only reads and exits.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_forked_child_starts_empty():
    near = near_cache("space", 60)
    filled(near, "a", b"1")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running pytest's teardown
        try:
            seen = near.get("a") is MISSING and near_cache("space", 60) is not near
            os.write(write, b"empty" if seen else b"stale")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"empty"
    assert near.get("a") == b"1"  # the parent keeps its own


# Sessions


@pytest.fixture
def emu(settings, cfkv_emulator):
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    settings.CFKV = {"default": cfkv_emulator.alias_settings(MAX_RETRIES=0)}
    yield cfkv_emulator


@pytest.fixture
def counted(cfkv_calls):
    """Return ``counted(fn)``: what ``fn()`` returned, and the KV API calls it made by endpoint."""
    def run(fn):
        cfkv_calls.reset()
        result = fn()
        return result, cfkv_calls.counts

    return run


def saved_session(**data):
    session = SessionStore()
    session.update(data)
    session.save()
    return session.session_key


def load(key):
    return dict(SessionStore(key).load())


def test_sessions_have_no_near_cache_by_default(emu, counted):
    key = saved_session(cart=[1])
    for _ in range(2):
        assert counted(lambda: load(key)) == ({"cart": [1]}, {"get": 1})


def test_session_near_cache_skips_repeated_reads(emu, settings, counted):
    settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = 30
    key = saved_session(cart=[1])
    assert counted(lambda: load(key)) == ({"cart": [1]}, {"get": 1})
    assert counted(lambda: load(key)) == ({"cart": [1]}, {})
    # Our own write is read back at once.
    session = SessionStore(key)
    session["cart"] = [2]
    session.save()
    assert load(key) == {"cart": [2]}


def test_session_logout_here_is_seen_at_once_and_elsewhere_after_the_timeout(emu, settings, clock):
    settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = 30
    here, elsewhere = saved_session(user="a"), saved_session(user="b")
    load(here), load(elsewhere)
    SessionStore(here).delete()  # a logout in this process
    assert load(here) == {}
    get_kv().delete(SessionStore.kv_key(elsewhere))  # another process logs out
    assert load(elsewhere) == {"user": "b"}  # the documented staleness
    clock(30)
    assert load(elsewhere) == {}


def test_a_session_write_that_got_no_answer_keeps_reads_of_it_out_of_the_near_cache(emu, settings, monkeypatch):
    """It may still land: the session's next reads go to KV until it surely has (UNSETTLED_SECONDS)."""
    from django_cfkv.client import KVClient
    from django_cfkv.exceptions import KVConnectionError

    settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = 600
    key = saved_session(cart=[1])
    assert load(key) == {"cart": [1]}  # near now

    def no_answer(client, *args, **kwargs):
        raise KVConnectionError("Could not reach Workers KV for PUT put.")

    session = SessionStore(key)
    session["cart"] = [2]
    with monkeypatch.context() as patched:
        patched.setattr(KVClient, "put", no_answer)
        with pytest.raises(KVConnectionError):
            session.save()
    load(key)  # a read while the write may still land
    seen = []
    get = KVClient.get
    monkeypatch.setattr(KVClient, "get", lambda client, *a, **k: seen.append(a) or get(client, *a, **k))
    load(key)
    assert seen, "the read was answered from the near cache"


def test_session_cycle_key_and_flush_forget_the_old_key(emu, settings):
    settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = 30
    key = saved_session(user="a")
    session = SessionStore(key)
    session.load()
    session.cycle_key()
    session.save()
    assert load(key) == {}
    assert load(session.session_key) == {"user": "a"}
    new_key = session.session_key
    session.flush()
    assert load(new_key) == {}


# Connection reuse under threads


def test_cache_and_sessions_reuse_connections_under_threads(emu, settings, cfkv_calls):
    settings.CACHES = {"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default"}}
    threads, rounds = 8, 15
    kv = get_kv()
    kv.put("warm", "1")  # the pool's first connection
    before = connections_opened(kv)
    cfkv_calls.reset()
    barrier = threading.Barrier(threads)

    def work(n):
        barrier.wait()
        cache = caches["default"]  # Django's per-thread cache object
        for i in range(rounds):
            cache.set(f"t{n}", i, 300)
            assert cache.get(f"t{n}") == i
            key = saved_session(n=n, i=i)
            assert load(key) == {"n": n, "i": i}

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    made = cfkv_calls.total
    opened = connections_opened(kv) - before
    assert made >= threads * rounds * 4
    # One connection per thread at most, however many calls: no TCP connection per call.
    assert opened <= threads, f"{opened} connections opened for {made} calls"


def test_near_cache_bounds_hold_under_threads():
    near = NearCache(60, max_entries=50, max_bytes=10_000)

    def work(n):
        for i in range(200):
            key = f"k{(n * 7 + i) % 120}"
            if near.get(key) is MISSING:
                filled(near, key, b"v" * (i % 90))
            if i % 13 == 0:
                near.invalidate(key)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert len(near) <= 50
    assert near._bytes == sum(size for _at, _raw, size in near._entries.values()) <= 10_000


# The cache backend


def kv_cache(settings, location="default", **options):
    settings.CACHES = {"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": location,
                                   "KEY_PREFIX": options.pop("KEY_PREFIX", ""), "OPTIONS": options}}
    return caches["default"]


def test_cache_has_no_near_cache_by_default(emu, settings, counted):
    cache = kv_cache(settings)
    cache.set("k", 1)
    assert counted(lambda: (cache.get("k"), cache.get("k"))) == ((1, 1), {"get": 2})


def test_cache_near_cache_answers_repeated_reads_and_sees_own_writes(emu, settings, counted):
    cache = kv_cache(settings, NEAR_CACHE_TIMEOUT=30)
    cache.set("k", 1)
    assert counted(lambda: (cache.get("k"), cache.get("k"), cache.get("nope"), cache.get("nope"))) == \
        ((1, 1, None, None), {"get": 2})
    cache.set("k", 2)
    assert counted(lambda: cache.get("k")) == (2, {"get": 1})
    cache.incr("k")
    assert cache.get("k") == 3
    cache.touch("k", 300)
    assert cache.get("k") == 3
    cache.delete("k")
    assert cache.get("k") is None
    cache.set_many({"a": 1, "b": 2})
    assert counted(lambda: cache.get_many(["a", "b", "c"])) == ({"a": 1, "b": 2}, {"bulk_get": 1})
    assert counted(lambda: cache.get_many(["a", "b", "c"])) == ({"a": 1, "b": 2}, {})
    cache.delete_many(["a"])
    assert cache.get_many(["a", "b"]) == {"b": 2}
    cache.set("pat:1", "x")
    cache.get("pat:1")
    cache.delete_pattern("pat:*")
    assert cache.get("pat:1") is None
    cache.get("b")
    cache.clear()
    assert counted(lambda: cache.get("b")) == (None, {"get": 1})


def test_cache_values_are_fresh_copies_and_exact_expiry_holds(emu, settings, monkeypatch, counted):

    cache = kv_cache(settings, NEAR_CACHE_TIMEOUT=30)
    cache.set("list", [1], 5)
    cache.get("list").append(2)  # changing what get() returned changes nothing stored
    assert cache.get("list") == [1]
    later = time.time() + 5
    monkeypatch.setattr(cfkv_clock, "now", lambda: later)
    assert counted(lambda: cache.get("list")) == (None, {})  # expired, though still kept in memory


def test_cache_other_writers_are_seen_after_the_timeout(emu, settings, clock):
    cache = kv_cache(settings, NEAR_CACHE_TIMEOUT=10)
    cache.set("k", "mine")
    assert cache.get("k") == "mine"
    get_kv().delete(cache.kv_key("k"))  # another process deletes the key
    assert cache.get("k") == "mine"
    clock(10)
    assert cache.get("k") is None


def test_cache_read_modify_write_reads_kv_not_memory(emu, settings):
    cache = kv_cache(settings, NEAR_CACHE_TIMEOUT=30)
    cache.set("n", 1)
    cache.set("gone", 1)
    assert cache.get("n") == 1 and cache.get("gone") == 1
    other = SimpleCacheWriter(cache)
    other.set("n", 10)  # another process's write, not seen by get() yet
    other.delete("gone")
    assert cache.get("n") == 1
    assert cache.incr("n") == 11  # incr reads KV
    assert cache.add("gone", 2) is True  # add reads KV
    assert cache.get("gone") == 2


class SimpleCacheWriter:
    """Write cache entries as another process would: straight to KV, leaving this process's memory alone."""

    def __init__(self, cache):
        self.cache = cache

    def set(self, key, value):
        kv_key = self.cache.kv_key(key)
        text = EntryCodec().dumps(value, None, kv_key=kv_key, key=key)  # pickled, signed with SECRET_KEY
        get_kv().put(kv_key, text, metadata=metadata.build(metadata.CACHE))

    def delete(self, key):
        get_kv().delete(self.cache.kv_key(key))


def test_cache_threads_share_one_near_cache_per_key_space(emu, settings, counted):
    cache = kv_cache(settings, NEAR_CACHE_TIMEOUT=30, KEY_PREFIX="p1")
    cache.set("k", 1)
    with ThreadPoolExecutor(1) as pool:  # another thread has its own cache object
        other, value = pool.submit(lambda: (caches["default"], caches["default"].get("k"))).result()
    assert other is not cache and value == 1
    assert counted(lambda: cache.get("k")) == (1, {})  # read through the near cache the other thread filled
