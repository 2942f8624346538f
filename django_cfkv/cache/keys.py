"""From a Django cache key to the Workers KV key that stores it.

A KV key is ``KV_PREFIX`` + Django's ``KEY_PREFIX:VERSION:key``. With the
default KEY_FUNCTION, ``%`` and ``:`` in KEY_PREFIX and VERSION are
percent-escaped, so the first two colons always end them: no cache's keys
fall under another's prefix (``KEY_PREFIX="app"`` against ``"app:v2"``).
"""

import hashlib
import re
from typing import Any

from django.core.cache.backends.base import BaseCache, InvalidCacheKey, default_key_func

from .. import limits
from ..exceptions import KVValueError

HASH_HEX = 64  # sha256 hexdigest
# The tail of a key shortened by HASH_LONG_KEYS. A key that already ends like this is shortened
# too, so no key kept as it is can equal another's shortened form.
HASHED_TAIL = re.compile(r"#[0-9a-f]{64}\Z")


def made_key(cache: BaseCache, key: Any, version: Any) -> str:
    """Return the KV key after KV_PREFIX: Django's ``KEY_PREFIX:VERSION:key``, not yet validated."""
    if cache.key_func is not default_key_func:
        return cache.make_key(key, version=version)
    version = cache.version if version is None else version
    return f"{escape(cache.key_prefix)}:{escape(version)}:{key}"


def to_kv_key(made: str, kv_prefix: str, hash_long_keys: bool) -> str:
    """Return the KV key of the made key ``made``, shortened if HASH_LONG_KEYS says so, or raise
    InvalidCacheKey saying why KV cannot take it."""
    full = kv_prefix + made
    size = len(full.encode("utf-8", "surrogatepass"))
    if hash_long_keys and (size > limits.MAX_KEY_BYTES or HASHED_TAIL.search(full)):
        head = full.encode("utf-8")[: limits.MAX_KEY_BYTES - HASH_HEX - 1].decode("utf-8", "ignore")
        full = f"{head}#{hashlib.sha256(full.encode('utf-8')).hexdigest()}"
        size = len(full.encode("utf-8"))
    if size > limits.MAX_KEY_BYTES:
        hint = "" if hash_long_keys else " or set OPTIONS['HASH_LONG_KEYS'] = True"
        raise InvalidCacheKey(
            f"Cache key {short(made)!r} is {size} bytes as a Workers KV key (KV_PREFIX, KEY_PREFIX, "
            f"VERSION and key in UTF-8); KV allows {limits.MAX_KEY_BYTES}. Use a shorter key{hint}."
        )
    try:
        return limits.validate_key(full)
    except KVValueError as exc:
        raise InvalidCacheKey(f"Cache key {short(made)!r} cannot be a Workers KV key: {exc}") from None


def cache_prefix(cache: BaseCache, kv_prefix: str) -> str:
    """Return the KV key prefix that every entry of ``cache`` starts with (all versions)."""
    if cache.key_func is default_key_func:
        return f"{kv_prefix}{escape(cache.key_prefix)}:"
    return kv_prefix


def escape(part: object) -> str:
    """Return KEY_PREFIX or VERSION with ``%`` and ``:`` percent-escaped (unchanged without them)."""
    return str(part).replace("%", "%25").replace(":", "%3A")


def fingerprint(kv_key: str) -> str:
    """Return a log-safe stand-in for a KV key: the start of its SHA-256 (a key may hold a session id)."""
    return "sha256:" + hashlib.sha256(kv_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def short(text: str, size: int = 80) -> str:
    return text if len(text) <= size else text[:size] + "..."
