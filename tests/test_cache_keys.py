"""Cache keys that must never meet: hashed long keys and short keys, @cached arguments of
different values, and caches whose KEY_PREFIXes overlap in one namespace."""

import datetime
import decimal
import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from django_cfkv import limits
from django_cfkv.cache import CloudflareKVCache, cached


@pytest.fixture(params=["local", "emulator"])
def make_cache(request, settings, tmp_path):
    """Build caches on one fresh namespace (the "default" alias) of each backend."""
    if request.param == "local":
        config = {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}
    else:
        config = request.getfixturevalue("cfkv_emulator").alias_settings(MAX_RETRIES=0)
    settings.CFKV = {"default": config}
    return lambda **params: CloudflareKVCache("default", params)


# HASH_LONG_KEYS

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


# @cached arguments

@cached(60)
def _function(*args, **kwargs):
    return None


def key_of(value):
    return _function.cache_key(value)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4),
    st.dates(), st.datetimes(), st.decimals(allow_nan=False, places=2), st.uuids(),
)
_hashables = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(tuple), st.frozensets(inner, max_size=3)), max_leaves=6)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.lists(inner, max_size=3).map(tuple),
    st.sets(_hashables, max_size=3),
    st.frozensets(_hashables, max_size=3),
    st.dictionaries(st.text(max_size=3), inner, max_size=3),
    st.dictionaries(st.sampled_from(["~set", "~tuple", "~dict", "~x.Y", "1", "a"]), inner, max_size=2),
    st.dictionaries(_hashables, inner, max_size=3),
), max_leaves=12)


def _lookalike(value, draw):
    """Return a value an encoding that is not injective would often confuse with ``value``."""
    swap = draw(st.integers(0, 3)) == 0
    kind = type(value)
    if swap:
        if kind is bool or value is None:
            return str(value).lower() if value is not None else "null"
        if kind is int:
            return draw(st.sampled_from([str(value), float(value), value == 1]))
        if kind in (float, decimal.Decimal, uuid.UUID):
            return str(value)
        if kind is str:
            return draw(st.sampled_from([[value], {"~x.Y": value}, (value,)]))
        if isinstance(value, (datetime.date, datetime.time)):
            return draw(st.sampled_from([value.isoformat(), {f"~datetime.{kind.__qualname__}": value.isoformat()}]))
        if kind in (list, tuple):
            return draw(st.sampled_from([tuple(value) if kind is list else list(value),
                                         {"~tuple": list(value)}]))
        if kind in (set, frozenset):
            return draw(st.sampled_from([sorted(value, key=repr), {"~set": sorted(value, key=repr)}]))
        if kind is dict:
            return draw(st.sampled_from([{str(k): v for k, v in value.items()},
                                         {"~dict": [[k, v] for k, v in value.items()]}]))
    if kind is list:
        return [_lookalike(item, draw) for item in value]
    if kind is tuple:
        return tuple(_lookalike(item, draw) for item in value)
    if kind is dict:
        return {k: _lookalike(v, draw) for k, v in value.items()}
    return value


REGRESSIONS = [({"~set": [1, 2]}, {1, 2}), ({"1": "x"}, {1: "x"}), ((1, 2), [1, 2]),
               ({"~tuple": [1]}, (1,)), ({"~dict": [[1, "x"]]}, {1: "x"})]


@given(data=st.data(), value=_values)
@settings(max_examples=400, deadline=None)
def test_cached_keys_of_lookalike_arguments_differ(data, value):
    other = _lookalike(value, data.draw)
    if key_of(value) == key_of(other):
        assert value == other, f"{value!r} and {other!r} share the key {key_of(value)!r}"


@given(values=st.lists(_values, min_size=2, max_size=8))
@settings(max_examples=300, deadline=None)
@example(values=[a for pair in REGRESSIONS for a in pair])
def test_distinct_arguments_give_distinct_keys(values):
    seen = {}
    for value in values:
        earlier = seen.setdefault(key_of(value), value)
        assert earlier == value, f"{earlier!r} and {value!r} share the key {key_of(value)!r}"


@given(value=_values)
@settings(max_examples=200, deadline=None)
def test_equal_arguments_share_a_key(value):
    # A fresh copy (sets and dicts rebuilt in another order) is the same argument: one key.
    def rebuild(v):
        if type(v) in (set, frozenset):
            return type(v)(sorted((rebuild(x) for x in v), key=repr, reverse=True))
        if type(v) is dict:
            return {k: rebuild(x) for k, x in reversed(list(v.items()))}
        if type(v) in (list, tuple):
            return type(v)(rebuild(x) for x in v)
        return v

    assert key_of(rebuild(value)) == key_of(value)


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
