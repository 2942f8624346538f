"""The cache's OPTIONS: a value of the wrong kind is refused by manage.py check and at the cache's first use,
saying what to fix."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_cfkv.cache import OPTION_DEFAULTS, CloudflareKVCache


@pytest.mark.parametrize("options, message", [
    ({"MAX_ENTRIES": 30}, "does not support OPTIONS\\['MAX_ENTRIES'\\]: Workers KV has no entry limit"),
    ({"SERIALISER": "json"}, "Unknown CloudflareKVCache OPTIONS SERIALISER; valid: SERIALIZER"),
    ({"SERIALIZER": "yaml"}, "SERIALIZER must be 'pickle' or 'json'; got 'yaml'"),
    ({"SERIALIZER": "django_redis.serializers.json.JSONSerializer"},
     "a class; CloudflareKVCache takes 'pickle' or 'json'"),
    ({"CLIENT_CLASS": "django_redis.client.DefaultClient"},
     "does not take django-redis' OPTIONS\\['CLIENT_CLASS'\\]: KV is reached through the CFKV alias"),
    ({"COMPRESSOR": "django_redis.compressors.zlib.ZlibCompressor"}, "set COMPRESS_MIN_BYTES \\(zlib\\) instead"),
    ({"SOCKET_TIMEOUT": 5}, "OPTIONS\\['SOCKET_TIMEOUT'\\]: set the CFKV alias' TIMEOUT and DEADLINE. Remove it"),
    ({"LOG_IGNORED_EXCEPTIONS": "yes"}, "OPTIONS\\['LOG_IGNORED_EXCEPTIONS'\\] must be True or False; got 'yes'"),
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
    ({"KV_PREFIX": 5}, "OPTIONS\\['KV_PREFIX'\\] must be a str of at most 128 bytes"),
    ({"KV_PREFIX": "é" * 65}, "OPTIONS\\['KV_PREFIX'\\] must be a str of at most 128 bytes"),
    ({"NEAR_CACHE_TIMEOUT": -1}, "NEAR_CACHE_TIMEOUT'\\] must be a number of 0 or more seconds \\(0: off\\); got -1"),
    ({"NEAR_CACHE_TIMEOUT": "5"}, "OPTIONS\\['NEAR_CACHE_TIMEOUT'\\] must be a number of 0 or more.*got '5'"),
    ({"NEAR_CACHE_TIMEOUT": float("inf")}, "OPTIONS\\['NEAR_CACHE_TIMEOUT'\\] must be a number.*got inf"),
    ({"NEAR_CACHE_TIMEOUT": 5, "NEAR_CACHE_MAX_ENTRIES": 0}, "NEAR_CACHE_MAX_ENTRIES'\\] must be a number above 0"),
    ({"NEAR_CACHE_TIMEOUT": 5, "NEAR_CACHE_MAX_BYTES": True}, "NEAR_CACHE_MAX_BYTES'\\] must be a number above 0"),
])
def test_bad_options_say_what_to_fix(options, message):
    cache = CloudflareKVCache("default", {"OPTIONS": options})  # Django's own cache checks build every cache
    for use in (lambda: cache.get("k"), lambda: cache.set("k", 1), lambda: cache.kv_key("k")):
        with pytest.raises(ImproperlyConfigured, match=message):
            use()


def test_defaults_build_a_cache():
    cache = CloudflareKVCache("default", {"OPTIONS": dict(OPTION_DEFAULTS)})  # every option, as documented
    assert cache.kv_key("k") == "cache::1:k"
