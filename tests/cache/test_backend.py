"""CloudflareKVCache beyond Django's own suite: exact expiry on every read path, the entry as a
Worker reads it, API-call costs, clear()'s scope, what incr() promises between threads and what
it cannot between processes, and the pooled connection. Failures are in test_faults.py, keys in
test_keys.py, OPTIONS in test_options.py."""

import asyncio
import json
import logging
import pickle
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
from django.core.cache.backends.base import CacheKeyWarning

from django_cfkv import clock as cfkv_clock
from django_cfkv import get_kv, limits
from django_cfkv.cache import CloudflareKVCache
from django_cfkv.exceptions import KVValueError
from django_cfkv.testing import connections_opened

# Expiry and entry format

def test_one_second_timeout_misses_after_one_second(make_cache):
    cache = make_cache()
    cache.set("k", "v", 1)
    assert cache.get("k") == "v"
    time.sleep(1.05)
    assert cache.get("k") is None
    assert cache.has_key("k") is False


@pytest.mark.parametrize("near", [0, 30], ids=["kv", "near-cache"])
def test_get_many_misses_entries_past_their_exact_expiry(make_cache, monkeypatch, near):
    """KV keeps an entry at least 60 s: get_many, as get, answers by the entry's own expiry."""
    cache = make_cache(OPTIONS={"NEAR_CACHE_TIMEOUT": near})
    cache.set_many({"short": 1, "brief": 2}, 5)
    cache.set("long", 3, 300)
    assert cache.get_many(["short", "brief", "long"]) == {"short": 1, "brief": 2, "long": 3}
    later = cfkv_clock.now() + 6
    monkeypatch.setattr(cfkv_clock, "now", lambda: later)
    assert len(get_kv().get_many([cache.kv_key("short"), cache.kv_key("brief")])) == 2  # KV still holds them
    assert cache.get_many(["short", "brief", "long"]) == {"long": 3}
    get_kv().put(cache.kv_key("binary"), b"\xff\xfe")  # KV's bulk read refuses it: read one by one
    assert cache.get_many(["short", "brief", "long", "binary"]) == {"long": 3}


def test_kv_ttl_is_at_least_sixty_seconds_and_metadata_carries_exact_expiry(make_cache):
    cache = make_cache(KEY_PREFIX="site", VERSION=3)
    before = time.time()
    cache.set("k", "v", 5)
    info = next(get_kv().iter_keys(prefix="cache:site:3:k"))
    assert info.name == "cache:site:3:k"
    assert info.metadata["kind"] == "cache"
    assert before + 4.99 <= info.metadata["expires"] <= time.time() + 5
    assert info.expiration >= int(before) + limits.MIN_TTL
    cache.set("forever", "v", None)
    forever = next(get_kv().iter_keys(prefix="cache:site:3:forever"))
    assert forever.metadata == {"kind": "cache"} and forever.expiration is None


def test_json_entries_are_what_a_worker_reads(make_cache):
    cache = make_cache(KEY_PREFIX="app", OPTIONS={"SERIALIZER": "json"})
    cache.set("greeting", {"text": "héllo", "n": [1, 2]}, None)
    assert cache.kv_key("greeting") == "cache:app:1:greeting"
    worker_view = json.loads(get_kv().get("cache:app:1:greeting"))  # env.KV.get(key, "json")
    assert worker_view == {"expires": None, "value": {"text": "héllo", "n": [1, 2]}}
    assert cache.get("greeting") == {"text": "héllo", "n": [1, 2]}


def test_text_no_utf8_can_hold_is_cached_as_its_json_escape(make_cache):
    cache = make_cache(OPTIONS={"SERIALIZER": "json"})
    value = {"q": json.loads('"\\ud800"'), "text": "héllo"}  # a lone surrogate, as a JSON body can carry
    cache.set("k", value, None)
    assert cache.get("k") == value and json.loads(get_kv().get(cache.kv_key("k")))["value"] == value


def test_pickled_entries_are_text_so_get_many_works_in_bulk(make_cache):
    cache = make_cache()
    values = {f"k{i}": (i, b"\x00\xff", {i}) for i in range(5)}
    cache.set_many(values)
    raw = get_kv().get(cache.kv_key("k1"))
    raw.decode("utf-8")  # text, as KV's bulk get requires
    assert pickle.loads(__import__("base64").b64decode(json.loads(raw)["pickle"])) == values["k1"]
    assert cache.get_many(list(values) + ["absent"]) == values


@pytest.mark.parametrize("ignore", [False, True])
def test_get_many_reads_around_a_binary_value_it_did_not_write(make_cache, ignore, caplog):
    cache = make_cache(OPTIONS={"IGNORE_EXCEPTIONS": ignore})
    cache.set_many({"a": 1, "c": [3]})
    get_kv().put(cache.kv_key("b"), b"\xff\xfe binary from a Worker")  # KV's bulk read refuses it
    with caplog.at_level(logging.WARNING, logger="django_cfkv.cache"):
        assert cache.get("b", "miss") == "miss"
        assert cache.get_many(["a", "b", "c", "absent"]) == {"a": 1, "c": [3]}
    assert "reading them one by one" in caplog.text


def test_get_many_fallback_costs_one_read_per_key(emulator_cache, calls_of):
    cache = emulator_cache()
    cache.set_many({"a": 1, "c": 3})
    get_kv().put(cache.kv_key("b"), b"\xff\xfe")
    assert calls_of(lambda: cache.get_many(["a", "b", "c"])) == {"bulk_get": 1, "get": 3}


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_compression_above_threshold(make_cache, serializer):
    cache = make_cache(OPTIONS={"SERIALIZER": serializer, "COMPRESS_MIN_BYTES": 100})
    big, small = "x" * 10_000, "tiny"
    cache.set_many({"big": big, "small": small})
    big_entry = json.loads(get_kv().get(cache.kv_key("big")))
    assert big_entry["format"] == serializer and len(big_entry["zlib"]) < 1000
    assert "zlib" not in json.loads(get_kv().get(cache.kv_key("small")))
    assert cache.get_many(["big", "small"]) == {"big": big, "small": small}


def test_unserializable_and_too_large_values_fail_clearly_before_io(make_cache):
    cache = make_cache(OPTIONS={"SERIALIZER": "json"})
    with pytest.raises(TypeError, match=r"Cannot cache object for key 'k' with SERIALIZER 'json'"):
        cache.set("k", object())
    with mock.patch.object(limits, "MAX_VALUE_BYTES", 1000):
        with pytest.raises(KVValueError, match=r"is \d+ bytes once encoded; Workers KV stores at most 1000"):
            cache.set("k", "y" * 2000)
    assert cache.get("k") is None


# clear() scope

def test_clear_deletes_only_this_caches_entries(make_cache):
    plain = make_cache()  # KEY_PREFIX "" and KV_PREFIX "cache:"
    other = make_cache(KEY_PREFIX="other")
    plain.set_many({"a": 1, "b": 2})
    plain.set("v2", 1, version=2)
    other.set("a", "kept")
    kv = get_kv()
    kv.put("session:abc", b"{}", metadata={"kind": "session"})
    kv.put("cache::1:foreign", b"not ours")  # a key in our range without our metadata
    assert plain.clear() == 3
    assert plain.get_many(["a", "b"]) == {} and plain.get("v2", version=2) is None
    assert other.get("a") == "kept"
    assert kv.get("session:abc") == b"{}" and kv.get("cache::1:foreign") == b"not ours"


def test_clear_and_bulk_calls_cost(emulator_cache, calls_of):
    cache = emulator_cache()
    data = {f"k{i}": i for i in range(250)}
    assert calls_of(lambda: cache.set_many(data)) == {"bulk_put": 1}
    assert calls_of(lambda: cache.get_many(list(data))) == {"bulk_get": 3}
    assert calls_of(lambda: cache.delete_many(list(data)[:200])) == {"bulk_get": 2, "bulk_delete": 1}
    assert calls_of(cache.clear) == {"list": 1, "bulk_delete": 1}
    assert cache.get_many(list(data)) == {}


def test_api_calls_per_method(emulator_cache, calls_of):
    """What the docstrings promise, django-redis' extras included."""
    cache = emulator_cache()
    assert calls_of(lambda: cache.set("k", 1)) == {"put": 1}
    assert calls_of(lambda: cache.get("k")) == {"get": 1}
    assert calls_of(lambda: cache.has_key("k")) == {"get_metadata": 1}
    assert calls_of(lambda: cache.incr("k")) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.touch("k", 100)) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.add("k", 5)) == {"get": 1}
    assert calls_of(lambda: cache.add("new", 5)) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.get_or_set("k", lambda: 0)) == {"get": 1}
    assert calls_of(lambda: cache.get_or_set("g", lambda: 0)) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.set("k", 1, 0)) == {"delete": 1}
    assert calls_of(lambda: cache.delete("new")) == {"get_metadata": 1, "delete": 1}
    assert calls_of(lambda: cache.touch("missing")) == {"get": 1}
    assert calls_of(cache.close) == {}
    cache.set("x", 1, 100)
    assert calls_of(lambda: cache.ttl("x")) == {"get_metadata": 1}
    assert calls_of(lambda: cache.expire("x", 50)) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.persist("x")) == {"get": 1, "put": 1}
    assert cache.ttl("x") is None
    assert calls_of(lambda: cache.pttl("x")) == {"get_metadata": 1}
    for extend in (lambda: cache.pexpire("x", 5000), lambda: cache.expire_at("x", time.time() + 50),
                   lambda: cache.pexpire_at("x", int(time.time() * 1000) + 5000)):
        assert calls_of(extend) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.set("x", 2, nx=True)) == {"get": 1}
    assert calls_of(lambda: cache.set("y", 2, nx=True)) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.set("x", 3, xx=True)) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.set("z", 3, xx=True)) == {"get": 1}
    assert calls_of(lambda: cache.incr("z", ignore_key_check=True)) == {"get": 1, "put": 1}
    assert calls_of(lambda: cache.delete_many(["x", "y", "z"])) == {"bulk_get": 1, "bulk_delete": 1}


def test_delete_and_touch_say_whether_the_key_existed(make_cache):
    cache = make_cache()
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.touch("k") is False
    cache.set("gone", 1, 1)
    with mock.patch.object(cfkv_clock, "now", lambda: time.time() + 2):
        assert cache.delete("gone") is False  # expired by its exact expiry, even though KV still holds it


# django-redis' set(nx=, xx=), delete_many()'s count, incr(ignore_key_check=)

def test_set_nx_and_xx_store_only_if_absent_or_present(make_cache):
    cache = make_cache()
    assert cache.set("k", 1, nx=True) is True and cache.get("k") == 1
    assert cache.set("k", 2, nx=True) is False and cache.get("k") == 1
    assert cache.set("other", 1, xx=True) is False and cache.has_key("other") is False
    assert cache.set("k", 3, 30, xx=True) is True and cache.get("k") == 3 and cache.ttl("k") == 30
    assert cache.set("k", 4, 0, nx=True) is False and cache.get("k") == 3  # present: nx leaves it as it is
    assert cache.set("k", 4, -1, xx=True) is True and cache.has_key("k") is False  # present: deleted
    assert cache.set("k", 5, 0, nx=True) is True and cache.has_key("k") is False  # absent: "stored", expired
    cache.set("gone", 1, 1)
    with mock.patch.object(cfkv_clock, "now", lambda: time.time() + 2):  # expired, though KV holds it
        assert cache.set("gone", 2, xx=True) is False
        assert cache.set("gone", 3, nx=True) is True and cache.get("gone") == 3
    assert cache.set("plain", 1) is None  # without nx or xx, Django's set() as it was
    with pytest.raises(ValueError, match="nx=True or xx=True, not both"):
        cache.set("k", 1, nx=True, xx=True)


def test_delete_many_returns_how_many_keys_held_a_live_entry(make_cache):
    cache = make_cache()
    cache.set_many({f"k{i}": i for i in range(150)})
    cache.set("gone", 1, 1)
    get_kv().put(cache.kv_key("foreign"), b"not a cache entry")
    with mock.patch.object(cfkv_clock, "now", lambda: time.time() + 2):
        keys = [*(f"k{i}" for i in range(150)), "k0", "missing", "gone", "foreign"]
        assert cache.delete_many(keys) == 150  # a key named twice counts once; expired and foreign ones not
    assert cache.get_many(keys) == {} and get_kv().get(cache.kv_key("foreign")) is None
    assert cache.delete_many(["k1", "k2"]) == 0
    assert cache.delete_many([]) is None  # Django's contract for no keys
    cache.set("k", 1)
    get_kv().put(cache.kv_key("binary"), b"\xff\xfe")  # KV's bulk read refuses it: metadata is read per key
    assert cache.delete_many(["k", "binary", "missing"]) == 1
    assert get_kv().get(cache.kv_key("binary")) is None


def test_incr_ignore_key_check_creates_the_key_at_delta_without_expiry(make_cache):
    cache = make_cache(TIMEOUT=60)
    assert cache.incr("new", 5, ignore_key_check=True) == 5
    assert cache.get("new") == 5 and cache.ttl("new") is None  # as Redis' INCRBY makes it: no expiry
    cache.set("short", 1, 30)
    assert cache.incr("short", 2, ignore_key_check=True) == 3 and cache.ttl("short") == 30  # expiry kept
    with pytest.raises(ValueError, match="not found"):
        cache.incr("absent")


def test_incr_of_a_missing_key_names_it_in_one_line_of_escapes(make_cache):
    """A key a site builds from a request (its path, which WSGI percent-decodes) is shown escaped: no terminal
    sequence or second line reaches a traceback or a log through the error's text."""
    cache = make_cache()
    path = "/\x1b]52;c;cHduZWQ=\x07\x1b[2K\r\nERROR forged\u202e"
    with pytest.raises(ValueError) as caught, pytest.warns(CacheKeyWarning):  # Django's, as for memcached
        cache.incr(f"hits:{path}")
    assert str(caught.value) == "Key 'hits:/\\x1b]52;c;cHduZWQ=\\x07\\x1b[2K\\r\\nERROR forged\\u202e' not found"


def test_close_keeps_the_pooled_connection(emulator_cache):
    cache = emulator_cache()
    kv = get_kv()
    cache.set("k", 1)
    opened = connections_opened(kv)
    for _ in range(3):
        cache.close()
        assert cache.get("k") == 1
    assert get_kv() is kv and connections_opened(kv) == opened


# What incr() promises between threads of a process, and what it cannot between processes

def test_incr_from_threads_of_one_process_counts_every_increment_once(make_cache):
    """The per-key lock serializes read-modify-write within a process: each call sees the one before."""
    cache = make_cache()
    cache.set("counter", 0)
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)

    def work(_):
        barrier.wait(10)
        return [cache.incr("counter") for _ in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        returned = [value for values in pool.map(work, range(threads)) for value in values]
    assert sorted(returned) == list(range(1, threads * per_thread + 1))  # no two calls saw the same count
    assert cache.get("counter") == threads * per_thread


OTHER_PROCESS = """
import sys
import django
from django.conf import settings

settings.configure(CFKV={"default": {"BACKEND": "local", "PATH": sys.argv[1]}})
django.setup()
from django_cfkv.cache import CloudflareKVCache

print(CloudflareKVCache("default", {"OPTIONS": {"SERIALIZER": "json"}}).incr("counter"))
"""


def test_an_increment_another_process_makes_between_read_and_write_is_lost(settings, tmp_path, monkeypatch):
    """KV has no compare-and-set, and the lock is this process's: as documented, an update can be lost."""
    path = str(tmp_path / "kv.sqlite3")
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": path}}
    cache = CloudflareKVCache("default", {"OPTIONS": {"SERIALIZER": "json"}})
    cache.set("counter", 10)
    kv, others = get_kv(), []
    write = kv.put

    def put_after_another_process(key, value, **kwargs):
        # This process has read 10; another one increments before this write lands.
        done = subprocess.run([sys.executable, "-c", OTHER_PROCESS, path], capture_output=True, text=True,
                              timeout=60, check=True)
        others.append(done.stdout.strip())
        return write(key, value, **kwargs)

    monkeypatch.setattr(kv, "put", put_after_another_process)
    assert cache.incr("counter") == 11
    assert others == ["11"]  # the other process read 10 too
    assert cache.get("counter") == 11  # two increments, one lost


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
