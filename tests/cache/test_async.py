"""The cache's async methods await the KV object's async twins (with the async extra: on the event loop, no
thread), making the calls their blocking namesakes make, through the same near cache and stampede protection.
IGNORE_EXCEPTIONS is held by the fault matrix (tests/cache/test_faults.py), and Django's own async cache tests
run on them in tests/cache/test_django_suite.py.
"""

import asyncio
import threading
import time

import pytest

from django_cfkv.cache import CloudflareKVCache
from django_cfkv.cache.stampede import stampede_events
from django_cfkv.client import KVClient
from tests.cache.conftest import ALIAS

BLOCKING = ("get", "get_with_metadata", "get_metadata", "get_many", "put", "put_many", "delete", "delete_many",
            "list_keys")


@pytest.fixture
def no_blocking_calls(monkeypatch):
    """Make each blocking KVClient call fail: an async method that ran its blocking namesake in a thread fails."""
    for name in BLOCKING:
        monkeypatch.setattr(KVClient, name, _refused(name))


# (blocking operation, its async twin): each pair runs on a cache of its own, and must make the same calls.
PAIRS = {
    "set": (lambda c: c.set("k", {"v": 1}, 300), lambda c: c.aset("k", {"v": 1}, 300)),
    "add existing": (lambda c: c.add("k", 2, 300), lambda c: c.aadd("k", 2, 300)),
    "add": (lambda c: c.add("n", 1, 300), lambda c: c.aadd("n", 1, 300)),
    "set nx existing": (lambda c: c.set("k", 3, 300, nx=True), lambda c: c.aset("k", 3, 300, nx=True)),
    "set nx": (lambda c: c.set("x", 3, 300, nx=True), lambda c: c.aset("x", 3, 300, nx=True)),
    "set xx missing": (lambda c: c.set("y", 4, 300, xx=True), lambda c: c.aset("y", 4, 300, xx=True)),
    "set xx": (lambda c: c.set("x", 4, 300, xx=True), lambda c: c.aset("x", 4, 300, xx=True)),
    "incr": (lambda c: c.incr("n", 5), lambda c: c.aincr("n", 5)),
    "decr": (lambda c: c.decr("n"), lambda c: c.adecr("n")),
    "incr creates": (lambda c: c.incr("i", 2, ignore_key_check=True), lambda c: c.aincr("i", 2, ignore_key_check=True)),
    "touch": (lambda c: c.touch("x", 100), lambda c: c.atouch("x", 100)),
    "touch missing": (lambda c: c.touch("nope", 100), lambda c: c.atouch("nope", 100)),
    "ttl": (lambda c: c.ttl("x"), lambda c: c.attl("x")),
    "expire": (lambda c: c.expire("x", 200), lambda c: c.aexpire("x", 200)),
    "pexpire": (lambda c: c.pexpire("x", 250_000), lambda c: c.apexpire("x", 250_000)),
    "ttl after pexpire": (lambda c: c.ttl("x"), lambda c: c.attl("x")),
    "expire_at": (lambda c: c.expire_at("x", AT), lambda c: c.aexpire_at("x", AT)),
    "pexpire_at": (lambda c: c.pexpire_at("i", AT * 1000), lambda c: c.apexpire_at("i", AT * 1000)),
    "persist": (lambda c: c.persist("x"), lambda c: c.apersist("x")),
    "pttl persisted": (lambda c: c.pttl("x"), lambda c: c.apttl("x")),
    "pttl missing": (lambda c: c.pttl("nope"), lambda c: c.apttl("nope")),
    "expire missing": (lambda c: c.expire("nope", 10), lambda c: c.aexpire("nope", 10)),
    "expire past": (lambda c: c.expire_at("i", 1), lambda c: c.aexpire_at("i", 1)),
    "get": (lambda c: c.get("k"), lambda c: c.aget("k")),
    "get missing": (lambda c: c.get("nope", "d"), lambda c: c.aget("nope", "d")),
    "has_key": (lambda c: c.has_key("k"), lambda c: c.ahas_key("k")),
    "set_many": (lambda c: c.set_many({"a": 1, "b": [2]}, 300), lambda c: c.aset_many({"a": 1, "b": [2]}, 300)),
    "get_many": (lambda c: c.get_many(["a", "b", "c"]), lambda c: c.aget_many(["a", "b", "c"])),
    "get_or_set miss": (lambda c: c.get_or_set("g", lambda: "made", 300),
                        lambda c: c.aget_or_set("g", lambda: "made", 300)),
    "get_or_set hit": (lambda c: c.get_or_set("g", lambda: "other", 300),
                       lambda c: c.aget_or_set("g", lambda: "other", 300)),
    "keys": (lambda c: c.keys("*"), lambda c: c.akeys("*")),
    "iter_keys": (lambda c: list(c.iter_keys("*", itersize=10)), lambda c: _collect(c.aiter_keys("*", itersize=10))),
    "delete_pattern": (lambda c: c.delete_pattern("[ab]"), lambda c: c.adelete_pattern("[ab]")),
    "delete_many": (lambda c: c.delete_many(["a", "b", "z"]), lambda c: c.adelete_many(["a", "b", "z"])),
    "delete": (lambda c: c.delete("k"), lambda c: c.adelete("k")),
    "delete missing": (lambda c: c.delete("k"), lambda c: c.adelete("k")),
    "set past timeout": (lambda c: c.set("p", 1, -1), lambda c: c.aset("p", 1, -1)),
    "set_many past timeout": (lambda c: c.set_many({"q": 1}, -1), lambda c: c.aset_many({"q": 1}, -1)),
    "clear": (lambda c: c.clear(), lambda c: c.aclear()),
    "get after clear": (lambda c: c.get_many(["x", "n", "g"]), lambda c: c.aget_many(["x", "n", "g"])),
}
AT = int(time.time()) + 3600


async def _collect(keys):
    return [key async for key in keys]


@pytest.mark.parametrize("near", [False, True], ids=["kv", "near-cache"])
def test_async_methods_answer_and_call_as_their_blocking_namesakes(on_emulator, cfkv_calls, monkeypatch, near):
    options = {"NEAR_CACHE_TIMEOUT": 60} if near else {}
    blocking = CloudflareKVCache(ALIAS, {"KEY_PREFIX": "blocking", "OPTIONS": options})
    awaited = CloudflareKVCache(ALIAS, {"KEY_PREFIX": "awaited", "OPTIONS": options})
    for name, (call, acall) in PAIRS.items():
        cfkv_calls.reset()
        expected = call(blocking)
        expected_calls = cfkv_calls.counts
        cfkv_calls.reset()
        with monkeypatch.context() as patch:  # the async twin may not fall back to a blocking call
            for method in BLOCKING:
                patch.setattr(KVClient, method, _refused(method))
            got = asyncio.run(acall(awaited))
        assert got == expected, name
        assert cfkv_calls.counts == expected_calls, name
    if near:  # a read answered from memory costs no call, as in blocking code
        asyncio.run(awaited.aset("g", "made", 300))
        asyncio.run(awaited.aget("g"))  # remembered
        cfkv_calls.reset()
        assert asyncio.run(awaited.aget("g")) == "made" and cfkv_calls.total == 0


def _refused(name):
    def call(self, *args, **kwargs):
        raise AssertionError(f"KVClient.{name}() was called by an async cache method")
    return call


def test_a_write_awaited_forgets_the_near_cached_value(on_emulator, no_blocking_calls, cfkv_calls):
    cache = CloudflareKVCache(ALIAS, {"OPTIONS": {"NEAR_CACHE_TIMEOUT": 60}})

    async def view():
        await cache.aset("k", "old", 300)
        assert await cache.aget("k") == "old"
        await cache.aset("k", "new", 300)
        return await cache.aget("k")

    assert asyncio.run(view()) == "new"
    assert cfkv_calls.counts == {"put": 2, "get": 2}


def test_gathered_get_or_set_computes_once(on_emulator, no_blocking_calls):
    """Stampede protection: coroutines missing one key at once wait for the first one's value."""
    cache = CloudflareKVCache(ALIAS, {})
    computed = []

    def compute():
        computed.append(threading.current_thread())
        # Long enough for the other reads (in flight at once) to answer, so each finds the computation
        # under way: a read that missed but answered after the value was stored would compute again.
        time.sleep(0.5)
        return "value"

    async def view():
        return await asyncio.gather(*(cache.aget_or_set("hot", compute, 300) for _ in range(5)))

    before = stampede_events.snapshot()
    assert asyncio.run(view()) == ["value"] * 5
    assert len(computed) == 1
    assert stampede_events.snapshot().get("waited", 0) - before.get("waited", 0) == 4


def test_gathered_aincr_on_one_key_loses_no_update(on_emulator, no_blocking_calls):
    """Read-modify-writes of one key awaited at once take turns (the key's lock on the event loop), as threads
    of one process do: none reads the value before another's write of it."""
    cache = CloudflareKVCache(ALIAS, {})

    async def view():
        await cache.aset("n", 0, 300)
        await asyncio.gather(*(cache.aincr("n") for _ in range(5)), *(cache.aadd("a", i, 300) for i in range(3)))
        return await cache.aget("n"), await cache.aget("a")

    assert asyncio.run(view()) == (5, 0)


def test_aiter_keys_is_an_async_iterator_listing_a_page_at_a_time(on_emulator, no_blocking_calls, cfkv_calls):
    cache = CloudflareKVCache(ALIAS, {})

    async def view():
        await cache.aset_many({f"k{i:02}": i for i in range(15)}, 300)
        cfkv_calls.reset()
        keys = cache.aiter_keys("k*", itersize=10)
        first = [await anext(keys) for _ in range(10)]
        listed = cfkv_calls.counts.get("list")
        return first + [key async for key in keys], listed

    keys, listed_for_the_first_page = asyncio.run(view())
    assert keys == [f"k{i:02}" for i in range(15)]
    assert listed_for_the_first_page == 1 and cfkv_calls.counts == {"list": 2}


# A coroutine holding a key, and a blocking call in its loop's own thread


def test_a_blocking_incr_in_the_loops_own_thread_does_not_wait_for_that_loops_coroutine(on_emulator):
    """A sync call inside an async view blocks its loop: were it to wait for a coroutine of that loop holding
    the key, it would wait for ever. (Coroutines hold their loop's lock of the key, never the threads' lock.)"""
    cache = CloudflareKVCache(ALIAS, {})
    cache.set("n", 0, 300)

    async def view():
        holder = asyncio.ensure_future(cache.aincr("n"))
        await asyncio.sleep(0)  # the coroutine holds the key, awaiting KV
        blocking = cache.incr("n")  # in the loop's own thread
        return blocking, await holder

    answers = []
    loop_thread = threading.Thread(target=lambda: answers.append(asyncio.run(view())), daemon=True)
    loop_thread.start()
    loop_thread.join(10)
    assert not loop_thread.is_alive(), "the blocking incr waited for a coroutine of its own thread's loop"
    assert sorted(answers[0]) in ([1, 1], [1, 2])  # both ran; these two were not serialized


def test_cached_on_async_def_without_stampede_protection_fails_as_the_sync_one_does(settings, cfkv_emulator, caplog):
    """IGNORE_EXCEPTIONS: the same value, and the same records (a get_or_set that failed), as a sync function's."""
    import logging

    from django_cfkv.cache import cached

    down = {**cfkv_emulator.alias_settings(MAX_RETRIES=0), "BASE_URL": "http://127.0.0.1:9/client/v4"}
    settings.CFKV = {**settings.CFKV, "down": down}
    settings.CACHES = {**settings.CACHES, "down": {
        "BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "down",
        "OPTIONS": {"IGNORE_EXCEPTIONS": True, "STAMPEDE_PROTECTION": False}}}

    @cached(60, alias="down", key="report")
    def report():
        return "computed"

    @cached(60, alias="down", key="report")
    async def areport():
        return "computed"

    seen = {}
    for name, call in (("sync", report), ("async", lambda: asyncio.run(areport()))):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="django_cfkv.cache"):
            seen[name] = (call(), [(r.levelname, r.getMessage().split(" failed")[0]) for r in caplog.records
                                   if r.name == "django_cfkv.cache"])
    assert seen["async"] == seen["sync"] and seen["sync"][0] == "computed"
    assert [message for _, message in seen["sync"][1]] == ["Cache get_or_set on CFKV alias 'down'"] * 2
