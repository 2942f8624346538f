"""From Django's key to the KV key: KV's limits, HASH_LONG_KEYS, and keys that must never meet
(hashed long keys and short keys, caches whose KEY_PREFIXes overlap in one namespace)."""

import pytest
from django.core.cache import InvalidCacheKey

from django_cfkv import limits

# KV's limits and HASH_LONG_KEYS

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


@pytest.mark.filterwarnings("ignore::django.core.cache.CacheKeyWarning")  # memcached-only
def test_a_short_key_cannot_take_a_long_keys_hashed_place(make_cache):
    cache = make_cache(KEY_PREFIX="p", OPTIONS={"HASH_LONG_KEYS": True})
    long_key = "a" * 600
    hashed = cache.kv_key(long_key)
    assert len(hashed.encode()) <= limits.MAX_KEY_BYTES
    impostor = hashed[len("cache:p:1:"):]  # a short key whose KV key would be exactly the hashed one
    cache.set(long_key, "real")
    cache.set(impostor, "poison")
    assert cache.kv_key(impostor) != hashed
    assert cache.get(long_key) == "real" and cache.get(impostor) == "poison"
    assert cache.get_many([long_key, impostor]) == {long_key: "real", impostor: "poison"}


def test_keys_that_need_no_hashing_keep_their_form(make_cache):
    cache = make_cache(KEY_PREFIX="p", OPTIONS={"HASH_LONG_KEYS": True})
    assert cache.kv_key("user#42") == "cache:p:1:user#42"
    assert cache.kv_key("x#" + "F" * 64) == "cache:p:1:x#" + "F" * 64  # not lowercase hex: not a hashed form


# Caches that share a namespace

OVERLAPPING = ["app", "app:v2", "app:1", "app%3Av2", ""]


def _caches(make_cache):
    return {prefix: make_cache(KEY_PREFIX=prefix) for prefix in OVERLAPPING}


def _fill(caches):
    for prefix, cache in caches.items():
        cache.set_many({"k": prefix, "1:k": prefix, "v2:1:k": prefix})


def _untouched(caches, *but):
    for prefix, cache in caches.items():
        if prefix not in but:
            assert cache.get_many(["k", "1:k", "v2:1:k"]) == dict.fromkeys(["k", "1:k", "v2:1:k"], prefix), prefix


def test_caches_with_overlapping_key_prefixes_never_share_an_entry(make_cache):
    caches = _caches(make_cache)
    _fill(caches)
    _untouched(caches)  # before the fix, "app" key "1:k" was "app:1" key "k", and so on
    assert len({cache.kv_key("1:k") for cache in caches.values()}) == len(caches)


@pytest.mark.parametrize("prefix", OVERLAPPING)
def test_clear_keys_and_delete_pattern_stay_in_their_own_cache(make_cache, prefix):
    caches = _caches(make_cache)
    _fill(caches)
    cache = caches[prefix]
    assert sorted(cache.keys("*")) == ["1:k", "k", "v2:1:k"]
    assert sorted(cache.iter_keys("*k", itersize=10)) == ["1:k", "k", "v2:1:k"]
    assert cache.keys("1:*") == ["1:k"]
    assert cache.delete_pattern("v2:*") == 1
    _untouched(caches, prefix)
    assert cache.clear() == 2
    assert cache.get_many(["k", "1:k", "v2:1:k"]) == {}
    _untouched(caches, prefix)


def test_versions_with_separators_stay_apart(make_cache):
    cache = make_cache(KEY_PREFIX="app")
    cache.set("k", "one", version="1:x")
    cache.set("x:k", "two", version=1)
    assert cache.get("k", version="1:x") == "one" and cache.get("x:k", version=1) == "two"


def test_prefixes_without_separators_keep_the_documented_form(make_cache):
    assert make_cache(KEY_PREFIX="myapp").kv_key("greeting") == "cache:myapp:1:greeting"
    assert make_cache(KEY_PREFIX="app:v2", VERSION=3).kv_key("k") == "cache:app%3Av2:3:k"
