"""The cache when KV fails. The fault matrix: get, set, add, touch, delete, has_key, get_many, set_many and
get_or_set, and the async twins that await KV natively (aadd, atouch and aset(xx=) among them), under each of
Cloudflare's documented failures (tests/support/faults.py), each asserting a typed error or, with IGNORE_EXCEPTIONS,
the documented degradation, logged. Beyond it: what IGNORE_EXCEPTIONS never hides (incr and aincr, a refused token,
a configuration error), django-redis' extras and their async twins, and acknowledged writes readable once the fault
clears.
"""

import asyncio
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_cfkv.cache import CloudflareKVCache
from django_cfkv.exceptions import KVAPIError, KVAuthError, KVConnectionError, KVError
from tests.support.faults import FAULTS, RETRY, warned

CACHE_OPS = {
    "get": (lambda c: c.get("k", "default"), "default"),
    "set": (lambda c: c.set("k", {"v": 1}, 300), None),
    "get_many": (lambda c: c.get_many(["a", "b"]), {}),
    "set_many": (lambda c: c.set_many({"a": 1, "b": 2}, 300), ["a", "b"]),
    "add": (lambda c: c.add("k", 1, 300), False),
    "delete": (lambda c: c.delete("k"), False),
    "has_key": (lambda c: c.has_key("k"), False),
    "touch": (lambda c: c.touch("k", 300), False),
    "get_or_set": (lambda c: c.get_or_set("k", lambda: "computed", 300), "computed"),
    # Django's async API, awaited natively (tests/cache/test_async.py): the same outcomes.
    "aget": (lambda c: asyncio.run(c.aget("k", "default")), "default"),
    "aset": (lambda c: asyncio.run(c.aset("k", {"v": 1}, 300)), None),
    "aget_many": (lambda c: asyncio.run(c.aget_many(["a", "b"])), {}),
    "aset_many": (lambda c: asyncio.run(c.aset_many({"a": 1, "b": 2}, 300)), ["a", "b"]),
    "adelete": (lambda c: asyncio.run(c.adelete("k")), False),
    "ahas_key": (lambda c: asyncio.run(c.ahas_key("k")), False),
    "adelete_many": (lambda c: asyncio.run(c.adelete_many(["a", "b"])), None),
    "aget_or_set": (lambda c: asyncio.run(c.aget_or_set("k", lambda: "computed", 300)), "computed"),
    "aadd": (lambda c: asyncio.run(c.aadd("k", 1, 300)), False),
    "atouch": (lambda c: asyncio.run(c.atouch("k", 300)), False),
    "aset_xx": (lambda c: asyncio.run(c.aset("k", 1, 300, xx=True)), False),
}


# What the operations that read a value answer for a miss. A value read is raw bytes: a 200 whose
# body is not a cache entry is a miss, and nothing is written after it.
MISS = {"get": "default", "aget": "default", "touch": False, "atouch": False, "aset_xx": False}


def _cache_outcome(op, fault, ignore):
    if op in MISS and fault in ("malformed_200", "success_false_200"):
        return "miss"
    if ignore and FAULTS[fault][1]:
        return "degraded"
    return "raise"


@pytest.mark.parametrize("ignore", [False, True], ids=["raise", "ignore_exceptions"])
@pytest.mark.parametrize("op", CACHE_OPS)
def test_cache_under_fault(fault, caplog, op, ignore):
    outcome = _cache_outcome(op, fault, ignore)
    cache = CloudflareKVCache("faulty", {"OPTIONS": {"IGNORE_EXCEPTIONS": ignore}})
    call, fallback = CACHE_OPS[op]
    caplog.set_level(logging.WARNING)
    if outcome == "raise":
        with pytest.raises(KVError):
            call(cache)
        return
    result = call(cache)
    if outcome == "miss":
        assert result == MISS[op]
        return
    assert result == fallback
    assert warned(caplog, "django_cfkv.cache"), "an ignored failure must be logged"


def test_cache_set_many_partial_failure_reports_exactly_the_keys_not_stored(settings, emulator):
    # No timeout in play: a bulk write that timed out on a busy machine but was done, then retried, would
    # store keys the retry's answer reports as failed (no store can report a write it never heard back from).
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY, "TIMEOUT": 30}}
    cache = CloudflareKVCache("faulty", {})
    data = {f"key{i}": {"n": i} for i in range(40)}
    emulator.set_faults(bulk_unsuccessful=0.5)
    failed = cache.set_many(data, 300)
    emulator.clear_faults()
    assert failed and len(failed) < 40
    got = cache.get_many(list(data))
    assert set(got) == set(data) - set(failed)
    assert all(got[k] == data[k] for k in got)


def test_cache_acknowledged_sets_are_readable_after_random_faults(settings, emulator, slept):
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY}}
    cache = CloudflareKVCache("faulty", {})
    emulator.set_faults(rate_503=0.3, rate_429=0.1, retry_after=0)
    acked, raised = {}, 0
    for i in range(80):
        try:
            cache.set(f"k{i}", ["value", i], 300)
        except KVError:
            raised += 1
        else:
            acked[f"k{i}"] = ["value", i]
    emulator.clear_faults()
    assert raised and acked
    assert cache.get_many(list(acked)) == acked


# Beyond the matrix

def test_ignore_exceptions_logs_never_hides_incr_and_loses_nothing_stored(emulator_cache, on_emulator, caplog):
    cache = emulator_cache(OPTIONS={"IGNORE_EXCEPTIONS": True})
    cache.set("k", "stored")
    with on_emulator.faults(rate_503=1.0):
        with caplog.at_level(logging.WARNING, logger="django_cfkv.cache"):
            assert cache.get("k", "fallback") == "fallback"
            assert cache.set("k", "lost") is None
        assert "Cache get on CFKV alias 'default' failed and was ignored" in caplog.text
        with pytest.raises(KVAPIError):
            cache.incr("k")  # a silent None would be taken for a count
        with pytest.raises(KVAPIError):
            asyncio.run(cache.aincr("k"))
    assert cache.get("k") == "stored"


def test_ignore_exceptions_covers_the_extras_when_kv_is_unreachable(settings, cfkv_emulator, caplog):
    unreachable = {**cfkv_emulator.alias_settings(MAX_RETRIES=0), "BASE_URL": "http://127.0.0.1:9/client/v4"}
    settings.CFKV = {**settings.CFKV, "down": unreachable}
    cache = CloudflareKVCache("down", {"OPTIONS": {"IGNORE_EXCEPTIONS": True}})
    strict = CloudflareKVCache("down", {})
    extras = {"ttl": (lambda c: c.ttl("k"), 0), "keys": (lambda c: c.keys("*"), []),
              "iter_keys": (lambda c: list(c.iter_keys("*")), []),
              "delete_pattern": (lambda c: c.delete_pattern("k*"), 0), "clear": (lambda c: c.clear(), None),
              "expire": (lambda c: c.expire("k", 10), False)}
    awaited = {"ttl": (lambda c: c.attl("k"), 0), "pttl": (lambda c: c.apttl("k"), 0),
               "keys": (lambda c: c.akeys("*"), []),
               "iter_keys": (lambda c: _collect(c.aiter_keys("*")), []),
               "delete_pattern": (lambda c: c.adelete_pattern("k*"), 0), "clear": (lambda c: c.aclear(), None),
               "expire": (lambda c: c.aexpire("k", 10), False), "persist": (lambda c: c.apersist("k"), False)}
    extras.update({f"async {name}": (lambda c, call=call: asyncio.run(call(c)), fallback)
                   for name, (call, fallback) in awaited.items()})
    for operation, (call, fallback) in extras.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="django_cfkv.cache"):
            assert call(cache) == fallback, operation
        name = operation.removeprefix("async ")
        assert f"Cache {name} on CFKV alias 'down' failed and was ignored" in caplog.text
        with pytest.raises(KVConnectionError):
            call(strict)


async def _collect(keys):
    return [key async for key in keys]


@pytest.fixture
def down(settings, cfkv_emulator):
    """Return ``down(**CACHES entry)``: a CloudflareKVCache on an alias whose server is not there."""
    unreachable = {**cfkv_emulator.alias_settings(MAX_RETRIES=0), "BASE_URL": "http://127.0.0.1:9/client/v4"}
    settings.CFKV = {**settings.CFKV, "down": unreachable}
    return lambda **params: CloudflareKVCache("down", params)


def test_django_redis_logging_of_ignored_failures(down, settings, caplog):
    """LOG_IGNORED_EXCEPTIONS (an option, or DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS) True: django-redis' error
    record on DJANGO_REDIS_LOGGER; False: nothing; unset: this library's warning, which names the operation."""
    caplog.set_level(logging.DEBUG)
    cache_records = lambda: [r for r in caplog.records if r.name in ("django_cfkv.cache", "myapp.cache")]  # noqa: E731
    down(OPTIONS={"IGNORE_EXCEPTIONS": True}).get("k")
    assert [(r.name, r.levelname) for r in cache_records()] == [("django_cfkv.cache", "WARNING")]
    assert "Cache get on CFKV alias 'down' failed and was ignored" in caplog.text

    caplog.clear()
    assert down(OPTIONS={"IGNORE_EXCEPTIONS": True, "LOG_IGNORED_EXCEPTIONS": True}).delete_many(["a"]) is None
    [record] = cache_records()
    assert (record.name, record.levelname, record.getMessage()) == ("django_cfkv.cache", "ERROR", "Exception ignored")
    assert isinstance(record.exc_info[1], KVConnectionError)

    settings.DJANGO_REDIS_LOGGER = "myapp.cache"
    settings.DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
    caplog.clear()
    down(OPTIONS={"IGNORE_EXCEPTIONS": True}).get("k")
    assert [(r.name, r.levelname, r.getMessage()) for r in cache_records()] == [
        ("myapp.cache", "ERROR", "Exception ignored")]

    caplog.clear()
    down(OPTIONS={"IGNORE_EXCEPTIONS": True, "LOG_IGNORED_EXCEPTIONS": False}).get("k")  # the option wins
    settings.DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = False
    down(OPTIONS={"IGNORE_EXCEPTIONS": True}).get("k")
    assert cache_records() == []


def test_django_redis_ignore_exceptions_setting(down, settings):
    settings.DJANGO_REDIS_IGNORE_EXCEPTIONS = True
    assert down().get("k", "fallback") == "fallback"
    with pytest.raises(KVConnectionError):  # OPTIONS win over the setting, as in django-redis
        down(OPTIONS={"IGNORE_EXCEPTIONS": False}).get("k")
    settings.DJANGO_REDIS_IGNORE_EXCEPTIONS = "yes"
    with pytest.raises(ImproperlyConfigured, match="DJANGO_REDIS_IGNORE_EXCEPTIONS must be True or False; got 'yes'"):
        down().get("k")  # at the first use: Django's own cache checks build every cache
    del settings.DJANGO_REDIS_IGNORE_EXCEPTIONS
    for name, value, message in [("DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS", 1, "must be True or False; got 1"),
                                 ("DJANGO_REDIS_LOGGER", "", "must be a logger's name; got ''")]:
        setattr(settings, name, value)
        with pytest.raises(ImproperlyConfigured, match=f"{name} {message}"):
            down().get("k")
        delattr(settings, name)
    with pytest.raises(ImproperlyConfigured, match="OPTIONS\\['LOG_IGNORED_EXCEPTIONS'\\] must be True or False"):
        down(OPTIONS={"LOG_IGNORED_EXCEPTIONS": "false"}).get("k")


def test_iter_keys_under_ignore_exceptions_ends_at_a_failed_page(emulator_cache, on_emulator):
    cache = emulator_cache(OPTIONS={"IGNORE_EXCEPTIONS": True})
    cache.set_many({f"k{i}": i for i in range(15)})
    keys = cache.iter_keys("k*", itersize=10)
    first = [next(keys) for _ in range(10)]
    with on_emulator.faults(rate_503=1.0):
        assert list(keys) == []  # the second page failed: the iteration ends, logged
    assert len(set(first)) == 10


def test_aiter_keys_under_ignore_exceptions_ends_at_a_failed_page(emulator_cache, on_emulator):
    cache = emulator_cache(OPTIONS={"IGNORE_EXCEPTIONS": True})
    cache.set_many({f"k{i}": i for i in range(15)})

    async def iterate():
        keys = cache.aiter_keys("k*", itersize=10)
        first = [await anext(keys) for _ in range(10)]
        with on_emulator.faults(rate_503=1.0):
            return first, [key async for key in keys]  # the second page failed: the iteration ends, logged

    first, rest = asyncio.run(iterate())
    assert len(set(first)) == 10 and rest == []


def test_auth_errors_always_raise(settings, cfkv_emulator):
    settings.CFKV = {**settings.CFKV, "bad": {**cfkv_emulator.alias_settings(), "API_TOKEN": "wrong-token"}}
    cache = CloudflareKVCache("bad", {"OPTIONS": {"IGNORE_EXCEPTIONS": True}})
    with pytest.raises(KVAuthError) as info:
        cache.get("k")
    assert "wrong-token" not in str(info.value)
    with pytest.raises(KVAuthError):
        cache.set("k", 1)


def test_unknown_alias_is_a_configuration_error():
    cache = CloudflareKVCache("nope", {"OPTIONS": {"IGNORE_EXCEPTIONS": True}})
    with pytest.raises(ImproperlyConfigured, match="alias 'nope' is not configured"):
        cache.get("k")
