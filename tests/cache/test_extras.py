"""django-redis' extras on CloudflareKVCache: ttl, expire, persist, keys, iter_keys, delete_pattern
and lock, with their API-call costs."""

import datetime
import time
from unittest import mock

import pytest
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from django_cfkv import clock as cfkv_clock
from django_cfkv.cache import CloudflareKVCache

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


def test_millisecond_expiry_and_moments(kvcache, monkeypatch):
    """pttl, pexpire, expire_at and pexpire_at to the millisecond, on a clock that does not move."""
    now = 1_767_225_600.0
    monkeypatch.setattr(cfkv_clock, "now", lambda: now)
    kvcache.set("k", "v", 5.5)
    assert kvcache.pttl("k") == 5500 and kvcache.ttl("k") == 6
    assert kvcache.pttl("missing") == 0
    assert kvcache.pexpire("k", 20_500) is True and kvcache.pttl("k") == 20_500
    assert kvcache.expire_at("k", now + 3600) is True and kvcache.pttl("k") == 3_600_000
    assert kvcache.pexpire_at("k", int(now * 1000) + 1234) is True and kvcache.pttl("k") == 1234
    moment = datetime.datetime.fromtimestamp(now + 90.25, tz=datetime.timezone.utc)
    assert kvcache.expire_at("k", moment) is True and kvcache.pttl("k") == 90_250
    naive = datetime.datetime.fromtimestamp(now + 45)  # a naive datetime is local time, as redis-py reads it
    assert kvcache.pexpire_at("k", naive) is True and kvcache.pttl("k") == 45_000
    assert kvcache.pexpire("k", DEFAULT_TIMEOUT) is True and kvcache.pttl("k") == 300_000  # TIMEOUT, in seconds
    assert kvcache.pexpire("k", None) is True and kvcache.pttl("k") is None
    assert kvcache.get("k") == "v"
    assert kvcache.expire_at("k", now - 1) is True and kvcache.get("k") is None  # a moment past deletes it
    for extend in (kvcache.pexpire, kvcache.expire_at, kvcache.pexpire_at):
        assert extend("missing", 10_000) is False
    with pytest.raises(TypeError, match="a datetime or a Unix time in milliseconds; got str"):
        kvcache.pexpire_at("k", "tomorrow")


# keys / iter_keys / delete_pattern

def test_keys_glob_on_user_keys_with_prefix_and_version(kvcache):
    kvcache.set_many({"user:1": 1, "user:2": 2, "user:10": 10, "order:1": 1, "u?x": 0})
    kvcache.set("user:3", 3, version=3)  # another version: not listed
    other = CloudflareKVCache("default", {"KEY_PREFIX": "other", "VERSION": 2})
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
    starred = CloudflareKVCache("default", {"KEY_PREFIX": "app*", "OPTIONS": {"KV_PREFIX": "c?:"}})
    others = [CloudflareKVCache("default", {"KEY_PREFIX": "appX", "OPTIONS": {"KV_PREFIX": "c?:"}}),
              CloudflareKVCache("default", {"KEY_PREFIX": "app*", "OPTIONS": {"KV_PREFIX": "cX:"}})]
    starred.set_many({"user:1": 1, "user:2": 2})
    for other in others:
        other.set_many({"user:1": "other", "user:3": "other"})
    assert sorted(starred.keys("*")) == ["user:1", "user:2"]
    assert sorted(starred.iter_keys("user:?")) == ["user:1", "user:2"]
    assert starred.delete_pattern("*") == 2 and starred.keys("*") == []
    for other in others:  # another cache's entries are untouched
        assert other.get_many(["user:1", "user:3"]) == {"user:1": "other", "user:3": "other"}
        other.clear()


def test_listing_reads_metadata_only_and_pages_by_itersize(emulator_cache, calls_of):
    cache = emulator_cache(KEY_PREFIX="app")
    cache.set_many({f"user:{i}": i for i in range(25)} | {f"other:{i}": i for i in range(25)})
    assert len(cache.keys("user:*")) == 25
    assert calls_of(lambda: cache.keys("user:*")) == {"list": 1}  # listed by the literal prefix "cache:app:1:user:"
    assert calls_of(lambda: list(cache.iter_keys("user:*", itersize=10))) == {"list": 3}
    # No literal beyond the prefix: every entry of this cache is listed.
    assert calls_of(lambda: list(cache.iter_keys("*er:1*", itersize=10))) == {"list": 5}
    assert calls_of(lambda: cache.delete_pattern("user:*", itersize=10)) == {"list": 3, "bulk_delete": 1}
    assert cache.keys("user:*") == [] and len(cache.keys("other:*")) == 25


def test_itersize_is_a_hint_held_to_what_a_listing_takes(emulator_cache, calls_of):
    """As Redis' SCAN count, itersize is a hint: below 10 a page holds 10 keys, above 1000 it holds 1000."""
    cache = emulator_cache()
    cache.set_many({f"user:{i}": i for i in range(25)})
    assert calls_of(lambda: sorted(cache.iter_keys("user:*", itersize=2))) == {"list": 3}
    assert calls_of(lambda: list(cache.iter_keys("user:*", itersize=5000))) == {"list": 1}
    assert len(list(cache.iter_keys("user:*", itersize=2))) == 25
    with pytest.raises(TypeError, match="itersize must be a whole number of keys or None; got '10'"):
        list(cache.iter_keys("user:*", itersize="10"))
    assert calls_of(lambda: cache.delete_pattern("user:*", itersize=1)) == {"list": 3, "bulk_delete": 1}
    assert cache.keys("user:*") == []


def test_lock_refuses_and_says_why(kvcache):
    with pytest.raises(NotImplementedError, match="no atomic compare-and-set.*Durable Object"):
        kvcache.lock("name")


