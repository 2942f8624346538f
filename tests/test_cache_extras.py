"""CloudflareKVCache beyond Django's contract: django-redis' extras (with their API-call
costs), stampede protection in get_or_set, and the ``cached`` decorator."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
from django.core.cache import caches

from django_cfkv import cache as cfkv_cache
from django_cfkv import clock as cfkv_clock
from django_cfkv.cache import CloudflareKVCache, cached, stampede_events
from django_cfkv.serializers import load_entry


@pytest.fixture(params=["local", "emulator"])
def kvcache(request, settings, tmp_path):
    """A CloudflareKVCache (also CACHES["kv"]) on a fresh namespace of each backend."""
    if request.param == "local":
        config = {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}
    else:
        config = request.getfixturevalue("cfkv_emulator").alias_settings(MAX_RETRIES=0)
    settings.CFKV = {**settings.CFKV, "c": config}
    settings.CACHES = {**settings.CACHES, "kv": {"BACKEND": "django_cfkv.cache.CloudflareKVCache",
                                                 "LOCATION": "c", "KEY_PREFIX": "app", "VERSION": 2}}
    yield caches["kv"]
    caches["kv"].clear()


@pytest.fixture
def counted(settings, cfkv_emulator):
    """A CloudflareKVCache on the emulator, and a function returning the calls an operation made."""
    settings.CFKV = {**settings.CFKV, "c": cfkv_emulator.alias_settings()}
    cache = CloudflareKVCache("c", {"KEY_PREFIX": "app"})

    def calls(operation):
        counter = cache._kv.transport.calls
        counter.reset()
        result = operation()
        return result, counter.snapshot()

    return cache, calls


# ttl / expire / persist

def test_ttl_follows_django_redis(kvcache):
    kvcache.set("forever", 1, None)
    kvcache.set("short", 1, 10)
    assert kvcache.ttl("forever") is None
    assert kvcache.ttl("missing") == 0
    assert kvcache.ttl("short") == 10  # whole seconds, rounded up, from the exact expiry
    with mock.patch.object(cfkv_clock, "now", lambda: time.time() + 9.5):
        assert kvcache.ttl("short") == 1
    with mock.patch.object(cfkv_clock, "now", lambda: time.time() + 11):
        assert kvcache.ttl("short") == 0  # expired, although KV keeps it for its 60 s floor


def test_expire_and_persist(kvcache):
    kvcache.set("k", "v", None)
    assert kvcache.expire("k", 30) is True and 29 <= kvcache.ttl("k") <= 30
    assert kvcache.persist("k") is True and kvcache.ttl("k") is None
    assert kvcache.get("k") == "v"
    assert kvcache.expire("k", 0) is True and kvcache.get("k") is None
    assert kvcache.expire("missing", 10) is False and kvcache.persist("missing") is False


def test_extras_api_calls(counted):
    cache, calls = counted
    cache.set("k", 1, 100)
    assert calls(lambda: cache.ttl("k")) == (100, {"get_metadata": 1})
    assert calls(lambda: cache.expire("k", 50)) == (True, {"get": 1, "put": 1})
    assert calls(lambda: cache.persist("k")) == (True, {"get": 1, "put": 1})


# keys / iter_keys / delete_pattern

def test_keys_glob_on_user_keys_with_prefix_and_version(kvcache):
    kvcache.set_many({"user:1": 1, "user:2": 2, "user:10": 10, "order:1": 1, "u?x": 0})
    kvcache.set("user:3", 3, version=3)  # another version: not listed
    other = CloudflareKVCache("c", {"KEY_PREFIX": "other", "VERSION": 2})
    other.set("user:9", 9)  # another KEY_PREFIX: not listed
    kvcache.set("user:gone", 1, 1)
    with mock.patch.object(cfkv_clock, "now", lambda: time.time() + 2):
        assert sorted(kvcache.keys("user:*")) == ["user:1", "user:10", "user:2"]
    assert sorted(kvcache.keys("user:?")) == ["user:1", "user:2"]
    assert sorted(kvcache.iter_keys("user:[12]*", itersize=10)) == ["user:1", "user:10", "user:2"]
    assert kvcache.keys("u?x") == ["u?x"]
    assert kvcache.keys("user:3", version=3) == ["user:3"]
    assert sorted(other.keys("*")) == ["user:9"]


def test_delete_pattern_counts_and_keeps_the_rest(kvcache):
    kvcache.set_many({f"session:{i}": i for i in range(30)} | {"keep": 1})
    assert kvcache.delete_pattern("session:*", itersize=10) == 30
    assert kvcache.keys("*") == ["keep"] and kvcache.get("keep") == 1
    assert kvcache.delete_pattern("nothing*") == 0


def test_glob_characters_in_prefixes_match_only_themselves(kvcache):
    starred = CloudflareKVCache("c", {"KEY_PREFIX": "app*", "OPTIONS": {"KV_PREFIX": "c?:"}})
    others = [CloudflareKVCache("c", {"KEY_PREFIX": "appX", "OPTIONS": {"KV_PREFIX": "c?:"}}),
              CloudflareKVCache("c", {"KEY_PREFIX": "app*", "OPTIONS": {"KV_PREFIX": "cX:"}})]
    starred.set_many({"user:1": 1, "user:2": 2})
    for other in others:
        other.set_many({"user:1": "other", "user:3": "other"})
    assert sorted(starred.keys("*")) == ["user:1", "user:2"]
    assert sorted(starred.iter_keys("user:?")) == ["user:1", "user:2"]
    assert starred.delete_pattern("*") == 2 and starred.keys("*") == []
    for other in others:  # another cache's entries are untouched
        assert other.get_many(["user:1", "user:3"]) == {"user:1": "other", "user:3": "other"}
        other.clear()


def test_listing_reads_metadata_only_and_pages_by_itersize(counted):
    cache, calls = counted
    cache.set_many({f"user:{i}": i for i in range(25)} | {f"other:{i}": i for i in range(25)})
    keys, used = calls(lambda: cache.keys("user:*"))
    assert len(keys) == 25 and used == {"list": 1}  # listed by the literal prefix "cache:app:1:user:"
    _, used = calls(lambda: list(cache.iter_keys("user:*", itersize=10)))
    assert used == {"list": 3}
    _, used = calls(lambda: list(cache.iter_keys("*er:1*", itersize=10)))
    assert used == {"list": 5}  # no literal beyond the prefix: every entry of this cache is listed
    count, used = calls(lambda: cache.delete_pattern("user:*", itersize=10))
    assert count == 25 and used == {"list": 3, "bulk_delete": 1}


def test_lock_refuses_and_says_why(kvcache):
    with pytest.raises(NotImplementedError, match="no atomic compare-and-set.*Durable Object"):
        kvcache.lock("name")


# Stampede protection

def _run_threads(count, target):
    results, errors = [None] * count, []

    def run(i):
        try:
            results[i] = target()
        except Exception as exc:  # noqa: BLE001 - collected and asserted
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "a caller was left waiting"
    return results, errors


def test_one_computation_per_process_while_others_wait(kvcache):
    runs = []
    stampede_events.reset()

    def compute():
        runs.append(1)
        time.sleep(0.2)
        return {"n": len(runs)}

    # Django gives each thread its own cache object: coordination must be process-wide.
    results, errors = _run_threads(8, lambda: caches["kv"].get_or_set("hot", compute, 60))
    assert not errors and len(runs) == 1 and results == [{"n": 1}] * 8
    assert stampede_events.snapshot() == {"computed": 1, "waited": 7}


def test_without_protection_every_caller_computes(kvcache, settings):
    settings.CACHES = {**settings.CACHES, "raw": {**settings.CACHES["kv"],
                                                  "OPTIONS": {"STAMPEDE_PROTECTION": False}}}
    barrier = threading.Barrier(4)

    def compute():
        barrier.wait(5)  # passes only if all four compute at once
        return "v"

    results, errors = _run_threads(4, lambda: caches["raw"].get_or_set("cold", compute, 60))
    assert not errors and results == ["v"] * 4


def test_failed_computation_releases_the_waiters(kvcache, settings):
    settings.CACHES = {**settings.CACHES, "slow": {**settings.CACHES["kv"], "OPTIONS": {"STAMPEDE_WAIT": 60}}}
    leader_started, calls = threading.Event(), []

    def compute():
        calls.append(1)
        if len(calls) == 1:
            leader_started.set()
            time.sleep(0.2)  # let the others queue up behind this computation
            raise RuntimeError("backend down")
        return "second try"

    def caller():
        if threading.current_thread().name != "leader":
            leader_started.wait(5)
        return caches["slow"].get_or_set("fragile", compute, 60)

    leader = threading.Thread(target=lambda: pytest.raises(RuntimeError, caller), name="leader")
    leader.start()
    results, errors = _run_threads(3, caller)  # joined within 10 s although STAMPEDE_WAIT is 60 s
    leader.join(10)
    assert not errors and set(results) == {"second try"}
    assert 2 <= len(calls) <= 4


def test_xfetch_recomputes_early_as_expiry_nears(kvcache):
    runs = []

    def compute():
        runs.append(1)
        time.sleep(0.05)
        return len(runs)

    assert kvcache.get_or_set("x", compute, 60) == 1
    entry = load_entry(kvcache._kv.get(kvcache.kv_key("x")), kvcache.kv_key("x"))
    assert entry.delta >= 0.05  # the computation time is stored with the value
    with mock.patch.object(cfkv_cache.random, "random", lambda: 0.5):
        assert kvcache.get_or_set("x", compute, 60) == 1  # 59 s before expiry: no refresh
        with mock.patch.object(cfkv_clock, "now", lambda: entry.expires - 0.01):
            assert kvcache.get_or_set("x", compute, 60) == 2  # just before expiry: refreshed early
    assert len(runs) == 2


def test_early_refresh_lets_other_threads_keep_serving(kvcache):
    kvcache.get_or_set("x", lambda: "old", 60)
    expires = load_entry(kvcache._kv.get(kvcache.kv_key("x")), kvcache.kv_key("x")).expires
    refreshing, release = threading.Event(), threading.Event()

    def slow_refresh():
        refreshing.set()
        release.wait(5)
        return "new"

    # Shortly before expiry; within KV's own TTL too (the store reads the same clock, and counts whole seconds).
    with mock.patch.object(cfkv_clock, "now", lambda: expires - 1.5), \
            mock.patch.object(CloudflareKVCache, "_refresh_early", lambda self, entry: True):
        refresher = threading.Thread(target=lambda: caches["kv"].get_or_set("x", slow_refresh, 60))
        refresher.start()
        refreshing.wait(5)
        assert kvcache.get_or_set("x", lambda: "unexpected", 60) == "old"  # served, not waiting
        release.set()
        refresher.join(5)
    assert kvcache.get("x") == "new"


# cached()

def test_cached_caches_results_including_none_and_invalidates(kvcache):
    runs = []

    @cached(60, alias="kv")
    def lookup(user_id, *, active=True):
        runs.append(user_id)
        return None if user_id == 0 else {"id": user_id, "active": active}

    assert lookup(1) == {"id": 1, "active": True} and lookup(1) == {"id": 1, "active": True}
    assert lookup(0) is None and lookup(0) is None
    assert runs == [1, 0]
    qualname = "test_cached_caches_results_including_none_and_invalidates.<locals>.lookup"
    assert lookup.cache_key(1) == f"cached:tests.test_cache_extras.{qualname}:[[1],{{}}]"
    assert lookup.invalidate(1) is True and lookup.invalidate(1) is False
    lookup(1)
    assert runs == [1, 0, 1]


def test_cached_keys_are_stable_and_hashed_when_long():
    @cached(60)
    def f(*args, **kwargs):
        return None

    long_key = f.cache_key("x" * 500, flag=True)
    assert long_key.startswith("cached:tests.test_cache_extras.") and len(long_key) < 200
    assert long_key == f.cache_key("x" * 500, flag=True)
    assert f.cache_key(a=1, b=2) == f.cache_key(b=2, a=1)
    with pytest.raises(TypeError, match="cannot build a stable key"):
        f.cache_key(object())

    @cached(60, key=lambda user_id: f"profile:{user_id}")
    def profile(user_id):
        return user_id

    assert profile.cache_key(7) == "profile:7"


def test_cached_async_functions(kvcache):
    runs = []

    @cached(60, alias="kv", key="report")
    async def report(day):
        runs.append(day)
        await asyncio.sleep(0.05)
        return f"report {day}"

    async def scenario():
        first = await asyncio.gather(*(report("mon") for _ in range(5)))
        assert first == ["report mon"] * 5
        assert await report("mon") == "report mon"
        assert await report.ainvalidate("mon") is True
        assert await report("mon") == "report mon"

    asyncio.run(scenario())
    assert runs == ["mon", "mon"]  # five concurrent callers, one computation


def test_async_waiters_hold_no_executor_thread(kvcache, settings):
    """The computation may need the loop's default executor (to_thread, getaddrinfo) while others wait."""
    settings.CACHES = {**settings.CACHES, "w": {**settings.CACHES["kv"], "OPTIONS": {"STAMPEDE_WAIT": 2}}}
    runs = []

    @cached(60, alias="w", key="threaded")
    async def compute():
        runs.append(1)
        await asyncio.sleep(0.05)  # let the other callers start waiting
        return await asyncio.to_thread(lambda: "done")

    async def scenario():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        return await asyncio.gather(*(compute() for _ in range(4)))

    stampede_events.reset()
    assert asyncio.run(scenario()) == ["done"] * 4
    assert runs == [1]  # no waiter gave up and computed again
    assert stampede_events.snapshot() == {"computed": 1, "waited": 3}


def test_async_failed_computation_releases_the_waiters(kvcache, settings):
    settings.CACHES = {**settings.CACHES, "slow": {**settings.CACHES["kv"], "OPTIONS": {"STAMPEDE_WAIT": 60}}}
    calls = []

    @cached(60, alias="slow", key="fragile")
    async def compute():
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(0.05)  # let the others queue up behind this computation
            raise RuntimeError("backend down")
        return "second try"

    async def scenario():  # bounded well below STAMPEDE_WAIT: waiters must not sit out the wait
        return await asyncio.wait_for(asyncio.gather(*(compute() for _ in range(4)), return_exceptions=True), 10)

    results = asyncio.run(scenario())
    assert isinstance(results[0], RuntimeError) and results[1:] == ["second try"] * 3
    assert 2 <= len(calls) <= 4


def test_cached_keys_tell_argument_types_apart():
    import datetime

    from django.contrib.auth.models import User

    @cached(60)
    def f(*args, **kwargs):
        return None

    def distinct(*values):
        return len({f.cache_key(v) for v in values}) == len(values)

    assert distinct({1, 2}, [1, 2])
    assert f.cache_key({2, 1}) == f.cache_key(frozenset([1, 2]))  # equal sets, one key
    assert distinct(datetime.date(2024, 1, 1), "2024-01-01", datetime.datetime(2024, 1, 1))
    assert distinct(User(pk=1), "auth.User:1", User(pk=2))
    assert f.cache_key(User(pk=1)) == f.cache_key(User(pk=1, username="renamed"))
    with pytest.raises(TypeError, match="unsaved auth.User instance .*pk is None"):
        f.cache_key(User())
