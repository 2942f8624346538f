"""CloudflareKVCache beyond Django's own suite: entry format, KV limits, API-call costs,
clear()'s scope, failures, atomicity (measured) and the pooled connection."""

import asyncio
import json
import logging
import pickle
import threading
import time
from unittest import mock

import pytest
from django.core.cache import InvalidCacheKey
from django.core.exceptions import ImproperlyConfigured

from django_cfkv import cache as cfkv_cache
from django_cfkv import clock as cfkv_clock
from django_cfkv import get_kv, limits
from django_cfkv.cache import CloudflareKVCache, decode_entry
from django_cfkv.exceptions import KVAPIError, KVAuthError, KVConnectionError, KVValueError
from django_cfkv.testing import connections_opened


def _use_alias(settings, config):
    settings.CFKV = {**settings.CFKV, "c": config}
    return "c"


@pytest.fixture(params=["local", "emulator"])
def make_cache(request, settings, tmp_path):
    """Build a CloudflareKVCache on a fresh namespace of each backend."""
    if request.param == "local":
        config = {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}
    else:
        config = request.getfixturevalue("cfkv_emulator").alias_settings(MAX_RETRIES=0)
    name = _use_alias(settings, config)

    def make(**params):
        return CloudflareKVCache(name, params)

    make.backend = request.param
    return make


@pytest.fixture
def emulator_cache(settings, cfkv_emulator):
    """Build a CloudflareKVCache on a fresh emulator namespace."""
    name = _use_alias(settings, cfkv_emulator.alias_settings(MAX_RETRIES=0))
    return lambda **params: CloudflareKVCache(name, params)


def calls_of(cache, operation):
    """Return the API calls ``operation()`` made, by endpoint."""
    counter = cache._kv.transport.calls
    counter.reset()
    operation()
    return counter.snapshot()


# Expiry and entry format

def test_one_second_timeout_misses_after_one_second(make_cache):
    cache = make_cache()
    cache.set("k", "v", 1)
    assert cache.get("k") == "v"
    time.sleep(1.05)
    assert cache.get("k") is None
    assert cache.has_key("k") is False


def test_kv_ttl_is_at_least_sixty_seconds_and_metadata_carries_exact_expiry(make_cache):
    cache = make_cache(KEY_PREFIX="site", VERSION=3)
    before = time.time()
    cache.set("k", "v", 5)
    info = next(cache._kv.iter_keys(prefix="cache:site:3:k"))
    assert info.name == "cache:site:3:k"
    assert info.metadata["kind"] == "cache"
    assert before + 4.99 <= info.metadata["expires"] <= time.time() + 5
    assert info.expiration >= int(before) + limits.MIN_TTL
    cache.set("forever", "v", None)
    forever = next(cache._kv.iter_keys(prefix="cache:site:3:forever"))
    assert forever.metadata == {"kind": "cache"} and forever.expiration is None


def test_json_entries_are_what_a_worker_reads(make_cache):
    cache = make_cache(KEY_PREFIX="app", OPTIONS={"SERIALIZER": "json"})
    cache.set("greeting", {"text": "héllo", "n": [1, 2]}, None)
    assert cache.kv_key("greeting") == "cache:app:1:greeting"
    worker_view = json.loads(cache._kv.get("cache:app:1:greeting"))  # env.KV.get(key, "json")
    assert worker_view == {"expires": None, "value": {"text": "héllo", "n": [1, 2]}}
    assert cache.get("greeting") == {"text": "héllo", "n": [1, 2]}


def test_pickled_entries_are_text_so_get_many_works_in_bulk(make_cache):
    cache = make_cache()
    values = {f"k{i}": (i, b"\x00\xff", {i}) for i in range(5)}
    cache.set_many(values)
    raw = cache._kv.get(cache.kv_key("k1"))
    raw.decode("utf-8")  # text, as KV's bulk get requires
    assert pickle.loads(__import__("base64").b64decode(json.loads(raw)["pickle"])) == values["k1"]
    assert cache.get_many(list(values) + ["absent"]) == values


@pytest.mark.parametrize("ignore", [False, True])
def test_get_many_reads_around_a_binary_value_it_did_not_write(make_cache, ignore, caplog):
    cache = make_cache(OPTIONS={"IGNORE_EXCEPTIONS": ignore})
    cache.set_many({"a": 1, "c": [3]})
    get_kv("c").put(cache.kv_key("b"), b"\xff\xfe binary from a Worker")  # KV's bulk read refuses it
    with caplog.at_level(logging.WARNING, logger="django_cfkv.cache"):
        assert cache.get("b", "miss") == "miss"
        assert cache.get_many(["a", "b", "c", "absent"]) == {"a": 1, "c": [3]}
    assert "reading them one by one" in caplog.text


def test_get_many_fallback_costs_one_read_per_key(emulator_cache):
    cache = emulator_cache()
    cache.set_many({"a": 1, "c": 3})
    get_kv("c").put(cache.kv_key("b"), b"\xff\xfe")
    assert calls_of(cache, lambda: cache.get_many(["a", "b", "c"])) == {"bulk_get": 1, "get": 3}


def test_decode_entry_returns_value_and_exact_expiry(make_cache):
    cache = make_cache()
    cache.set("k", [1, "two"], 30)
    entry = decode_entry(cache._kv.get(cache.kv_key("k")), cache.kv_key("k"))
    assert entry.value == [1, "two"]
    assert time.time() < entry.expires <= time.time() + 30
    value, expires = entry  # (value, expires), as manage.py cfkv uses it
    assert (value, expires) == (entry.value, entry.expires)
    with pytest.raises(ValueError, match="Not a cache entry"):
        decode_entry(b"plain text", "k")


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_compression_above_threshold(make_cache, serializer):
    cache = make_cache(OPTIONS={"SERIALIZER": serializer, "COMPRESS_MIN_BYTES": 100})
    big, small = "x" * 10_000, "tiny"
    cache.set_many({"big": big, "small": small})
    big_entry = json.loads(cache._kv.get(cache.kv_key("big")))
    assert big_entry["format"] == serializer and len(big_entry["zlib"]) < 1000
    assert "zlib" not in json.loads(cache._kv.get(cache.kv_key("small")))
    assert cache.get_many(["big", "small"]) == {"big": big, "small": small}


def test_unserializable_and_too_large_values_fail_clearly_before_io(make_cache):
    cache = make_cache(OPTIONS={"SERIALIZER": "json"})
    with pytest.raises(TypeError, match=r"Cannot cache object for key 'k' with SERIALIZER 'json'"):
        cache.set("k", object())
    with mock.patch.object(limits, "MAX_VALUE_BYTES", 1000):
        with pytest.raises(KVValueError, match=r"is \d+ bytes once encoded; Workers KV stores at most 1000"):
            cache.set("k", "y" * 2000)
    assert cache.get("k") is None


# Keys

@pytest.mark.filterwarnings("ignore::django.core.cache.CacheKeyWarning")  # memcached-only
def test_key_over_512_bytes_names_its_length(make_cache):
    cache = make_cache(KEY_PREFIX="p")
    with pytest.raises(InvalidCacheKey, match=r"is 513 bytes as a Workers KV key .* allows 512.*HASH_LONG_KEYS"):
        cache.set("é" * 250 + "x" * 3, 1)  # "cache:p:1:" (10) + 503 bytes
    with pytest.raises(InvalidCacheKey):
        cache.get_many(["ok", "x" * 600])


@pytest.mark.filterwarnings("ignore::django.core.cache.CacheKeyWarning")  # memcached-only
def test_hash_long_keys_keeps_keys_within_limit_and_distinct(make_cache):
    cache = make_cache(KEY_PREFIX="p", OPTIONS={"HASH_LONG_KEYS": True})
    one, two = "a" * 600 + "1", "a" * 600 + "2"
    cache.set(one, 1)
    cache.set(two, 2)
    assert (cache.get(one), cache.get(two)) == (1, 2)
    assert len(cache.kv_key(one).encode()) <= 512 and cache.kv_key(one).startswith("cache:p:1:aaa")
    assert cache.get_many([one, two]) == {one: 1, two: 2}


# clear() scope

def test_clear_deletes_only_this_caches_entries(make_cache):
    plain = make_cache()  # KEY_PREFIX "" and KV_PREFIX "cache:"
    other = make_cache(KEY_PREFIX="other")
    plain.set_many({"a": 1, "b": 2})
    plain.set("v2", 1, version=2)
    other.set("a", "kept")
    kv = plain._kv
    kv.put("session:abc", b"{}", metadata={"kind": "session"})
    kv.put("cache::1:foreign", b"not ours")  # a key in our range without our metadata
    assert plain.clear() == 3
    assert plain.get_many(["a", "b"]) == {} and plain.get("v2", version=2) is None
    assert other.get("a") == "kept"
    assert kv.get("session:abc") == b"{}" and kv.get("cache::1:foreign") == b"not ours"


def test_clear_and_bulk_calls_cost(emulator_cache):
    cache = emulator_cache()
    data = {f"k{i}": i for i in range(250)}
    assert calls_of(cache, lambda: cache.set_many(data)) == {"bulk_put": 1}
    assert calls_of(cache, lambda: cache.get_many(list(data))) == {"bulk_get": 3}
    assert calls_of(cache, lambda: cache.delete_many(list(data)[:200])) == {"bulk_delete": 1}
    assert calls_of(cache, cache.clear) == {"list": 1, "bulk_delete": 1}
    assert cache.get_many(list(data)) == {}


def test_api_calls_per_method(emulator_cache):
    cache = emulator_cache()
    assert calls_of(cache, lambda: cache.set("k", 1)) == {"put": 1}
    assert calls_of(cache, lambda: cache.get("k")) == {"get": 1}
    assert calls_of(cache, lambda: cache.has_key("k")) == {"get_metadata": 1}
    assert calls_of(cache, lambda: cache.incr("k")) == {"get": 1, "put": 1}
    assert calls_of(cache, lambda: cache.touch("k", 100)) == {"get": 1, "put": 1}
    assert calls_of(cache, lambda: cache.add("k", 5)) == {"get": 1}
    assert calls_of(cache, lambda: cache.add("new", 5)) == {"get": 1, "put": 1}
    assert calls_of(cache, lambda: cache.get_or_set("k", lambda: 0)) == {"get": 1}
    assert calls_of(cache, lambda: cache.get_or_set("g", lambda: 0)) == {"get": 1, "put": 1}
    assert calls_of(cache, lambda: cache.set("k", 1, 0)) == {"delete": 1}
    assert calls_of(cache, lambda: cache.delete("new")) == {"get_metadata": 1, "delete": 1}
    assert calls_of(cache, lambda: cache.touch("missing")) == {"get": 1}
    assert calls_of(cache, cache.close) == {}


def test_delete_and_touch_say_whether_the_key_existed(make_cache):
    cache = make_cache()
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.touch("k") is False
    cache.set("gone", 1, 1)
    with mock.patch.object(cfkv_clock, "now", lambda: time.time() + 2):
        assert cache.delete("gone") is False  # expired by its exact expiry, even though KV still holds it


# Options and configuration

@pytest.mark.parametrize("options, message", [
    ({"MAX_ENTRIES": 30}, "does not support OPTIONS\\['MAX_ENTRIES'\\]: Workers KV has no entry limit"),
    ({"SERIALISER": "json"}, "Unknown CloudflareKVCache OPTIONS SERIALISER; valid: SERIALIZER"),
    ({"SERIALIZER": "yaml"}, "SERIALIZER must be 'pickle' or 'json'; got 'yaml'"),
    ({"COMPRESS_MIN_BYTES": "1024"}, "COMPRESS_MIN_BYTES must be None .*such as 1024; got '1024'"),
    ({"COMPRESS_MIN_BYTES": -1}, "COMPRESS_MIN_BYTES must be None"),
    ({"COMPRESS_MIN_BYTES": 1.5}, "COMPRESS_MIN_BYTES must be None"),
    ({"STAMPEDE_BETA": "1"}, "OPTIONS\\['STAMPEDE_BETA'\\] must be a number of 0 or more"),
    ({"STAMPEDE_BETA": float("nan")}, "OPTIONS\\['STAMPEDE_BETA'\\] must be a number"),
    ({"STAMPEDE_WAIT": "ten"}, "OPTIONS\\['STAMPEDE_WAIT'\\] must be a number of 0 or more seconds.*got 'ten'"),
    ({"STAMPEDE_WAIT": -1}, "OPTIONS\\['STAMPEDE_WAIT'\\] must be a number"),
    ({"IGNORE_EXCEPTIONS": "false"}, "OPTIONS\\['IGNORE_EXCEPTIONS'\\] must be True or False; got 'false'"),
    ({"STAMPEDE_PROTECTION": None}, "OPTIONS\\['STAMPEDE_PROTECTION'\\] must be True or False"),
    ({"HASH_LONG_KEYS": 1}, "OPTIONS\\['HASH_LONG_KEYS'\\] must be True or False"),
])
def test_bad_options_raise_improperly_configured(options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        CloudflareKVCache("default", {"OPTIONS": options})


def test_close_keeps_the_pooled_connection(emulator_cache):
    cache = emulator_cache()
    kv = cache._kv
    cache.set("k", 1)
    opened = connections_opened(kv)
    for _ in range(3):
        cache.close()
        assert cache.get("k") == 1
    assert get_kv("c") is kv and connections_opened(kv) == opened


# Failures

def test_ignore_exceptions_returns_default_and_drops_writes(emulator_cache, cfkv_emulator, caplog):
    cache = emulator_cache(OPTIONS={"IGNORE_EXCEPTIONS": True})
    strict = CloudflareKVCache("c", {})
    cache.set("k", "stored")
    cfkv_emulator.set_faults(rate_503=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="django_cfkv.cache"):
            assert cache.get("k", "fallback") == "fallback"
            assert cache.set("k", "lost") is None
            assert cache.get_many(["k"]) == {}
            assert cache.set_many({"a": 1, "b": 2}) == ["a", "b"]
            assert cache.add("x", 1) is False and cache.delete("k") is False
            assert cache.get_or_set("g", lambda: "computed") == "computed"
        assert "Cache get on CFKV alias 'c' failed and was ignored" in caplog.text
        with pytest.raises(KVAPIError):
            strict.get("k")
        with pytest.raises(KVAPIError):
            cache.incr("k")  # a silent None would be taken for a count
    finally:
        cfkv_emulator.clear_faults()
    assert cache.get("k") == "stored"


def test_ignore_exceptions_covers_the_extras_when_kv_is_unreachable(settings, cfkv_emulator, caplog):
    unreachable = {**cfkv_emulator.alias_settings(MAX_RETRIES=0), "BASE_URL": "http://127.0.0.1:9/client/v4"}
    name = _use_alias(settings, unreachable)
    cache = CloudflareKVCache(name, {"OPTIONS": {"IGNORE_EXCEPTIONS": True}})
    strict = CloudflareKVCache(name, {})
    extras = {"ttl": (lambda c: c.ttl("k"), 0), "keys": (lambda c: c.keys("*"), []),
              "iter_keys": (lambda c: list(c.iter_keys("*")), []),
              "delete_pattern": (lambda c: c.delete_pattern("k*"), 0), "clear": (lambda c: c.clear(), None)}
    for operation, (call, fallback) in extras.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="django_cfkv.cache"):
            assert call(cache) == fallback, operation
        assert f"Cache {operation} on CFKV alias 'c' failed and was ignored" in caplog.text
        with pytest.raises(KVConnectionError):
            call(strict)


def test_iter_keys_under_ignore_exceptions_ends_at_a_failed_page(emulator_cache, cfkv_emulator):
    cache = emulator_cache(OPTIONS={"IGNORE_EXCEPTIONS": True})
    cache.set_many({f"k{i}": i for i in range(15)})
    keys = cache.iter_keys("k*", itersize=10)
    first = [next(keys) for _ in range(10)]
    cfkv_emulator.set_faults(rate_503=1.0)
    try:
        assert list(keys) == []  # the second page failed: the iteration ends, logged
    finally:
        cfkv_emulator.clear_faults()
    assert len(set(first)) == 10


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


# Atomicity, measured

def _hammer_incr(cache, threads=8, per_thread=25):
    cache.set("counter", 0)
    barrier = threading.Barrier(threads)

    def work():
        barrier.wait()
        for _ in range(per_thread):
            cache.incr("counter")

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = threads * per_thread
    return total, total - cache.get("counter")


def test_incr_lost_updates_are_measured(make_cache, capsys):
    """Threads of one process share a per-key lock; without it (as between processes) updates are lost."""
    cache = make_cache()
    total, lost_locked = _hammer_incr(cache)
    with mock.patch.object(cfkv_cache, "_key_lock", lambda key: threading.Lock()):
        _total, lost_unlocked = _hammer_incr(cache)
    with capsys.disabled():
        print(f"\n[incr on {make_cache.backend}] {total} increments from 8 threads: lost {lost_locked} "
              f"with the in-process lock, {lost_unlocked} without it (as between processes)")
    assert 0 <= lost_locked <= total and 0 <= lost_unlocked <= total
    assert lost_locked == 0  # the lock serializes read-modify-write within the process


# Async

def test_async_methods(make_cache):
    cache = make_cache()

    async def scenario():
        await cache.aset("a", 1)
        assert await cache.aadd("a", 2) is False
        await cache.aset_many({"b": 2, "c": 3})
        assert await cache.aget_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
        assert await cache.aincr("a", 10) == 11 and await cache.adecr("a") == 10
        assert await cache.ahas_key("b") is True
        assert await cache.aget_or_set("d", lambda: 4) == 4
        assert await cache.atouch("d", None) is True
        assert await cache.adelete("d") is True
        await cache.adelete_many(["b", "c"])
        assert await cache.aget("b", "gone") == "gone"
        await cache.aclose()
        await cache.aclear()
        assert await cache.aget("a") is None

    asyncio.run(scenario())
