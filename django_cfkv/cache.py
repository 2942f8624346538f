"""CloudflareKVCache: Django's cache API over a Workers KV namespace (a ``CFKV`` alias).

What KV allows, and so what this backend can promise:

* Exact expiry. KV's TTL floor is 60 s, so each entry carries its exact expiry
  (see :mod:`django_cfkv.serializers`) and every read checks it; KV gets a TTL of
  at least 60 s only to clean up.
* No atomic operations. ``add``, ``incr``, ``decr`` and ``touch`` read, then
  write. A per-key lock makes them safe between threads of one process; between
  processes or locations a concurrent writer can win and an update can be lost.
  KV also takes at most one write per second per key.
* Eventual consistency. Other Cloudflare locations may read a value up to ~60 s
  old, so ``delete()`` is not an instant global invalidation.
* Anyone who can write the namespace can write any bytes under a cache key.
  Pickled entries are signed with SECRET_KEY and bound to their KV key, and a
  pickle cache reads nothing else (see :mod:`django_cfkv.serializers`), so such
  a writer can delete or replay entries but never plant a value or run code.
* Near cache (``OPTIONS["NEAR_CACHE_TIMEOUT"]``, off by default): reads kept in
  this process's memory for that many seconds (see :mod:`django_cfkv.nearcache`).
  This process's own writes invalidate at once; other processes' writes are
  seen only once the entry ages out, on top of KV's own staleness.
"""

import asyncio
import fnmatch
import functools
import hashlib
import inspect
import json
import logging
import math
import random
import re
import threading

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheKey, default_key_func
from django.db.models import Model

from . import clock, limits, metadata
from .conf import get_kv
from .exceptions import (
    CFKVConfigurationError,
    KVAPIError,
    KVBulkError,
    KVConnectionError,
    KVError,
    KVMalformedResponseError,
    KVRateLimitError,
    KVValueError,
)
from .nearcache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, NearKV, near_cache
from .serializers import EntryCodec, SignatureError, decode_entry, retime
from .transport import CallCounter
from .types import iter_pages

__all__ = ["CloudflareKVCache", "cached", "decode_entry", "stampede_events"]

logger = logging.getLogger(__name__)
#: Entries refused for their signature: someone without SECRET_KEY wrote (or moved) them.
security_logger = logging.getLogger("django.security.SuspiciousCacheEntry")

OPTION_DEFAULTS = {
    "SERIALIZER": "pickle",
    "COMPRESS_MIN_BYTES": None,
    "HASH_LONG_KEYS": False,
    "IGNORE_EXCEPTIONS": False,
    "KV_PREFIX": "cache:",
    "STAMPEDE_PROTECTION": True,
    "STAMPEDE_BETA": 1.0,
    "STAMPEDE_WAIT": 10.0,
    "NEAR_CACHE_TIMEOUT": 0,
    "NEAR_CACHE_MAX_ENTRIES": DEFAULT_MAX_ENTRIES,
    "NEAR_CACHE_MAX_BYTES": DEFAULT_MAX_BYTES,
}
_HASH_HEX = 64  # sha256 hexdigest
# The tail of a key shortened by HASH_LONG_KEYS. A key that already ends like this is shortened
# too, so no key kept as it is can equal another's shortened form.
_HASHED_TAIL = re.compile(r"#[0-9a-f]{64}\Z")

#: Process-wide counts of stampede events: "computed", "waited", "early_refresh", "served_while_refreshing".
stampede_events = CallCounter()


class _Flight:
    """One in-process computation of a key that other callers may wait for."""

    def __init__(self):
        self.done = threading.Event()
        self.value = _MISSING


_MISSING = object()
_flights = {}
_flights_lock = threading.Lock()
_key_locks = [threading.Lock() for _ in range(64)]


def _key_lock(kv_key):
    return _key_locks[hash(kv_key) % len(_key_locks)]


def _join_flight(flight_key):
    """Return (flight, True) to the caller that must compute, (flight, False) to the others."""
    with _flights_lock:
        flight = _flights.get(flight_key)
        if flight is None:
            flight = _flights[flight_key] = _Flight()
            return flight, True
        return flight, False


def _land(flight_key, flight, value):
    with _flights_lock:
        _flights.pop(flight_key, None)
    flight.value = value
    flight.done.set()


def _transient(exc):
    """Return True for the failures IGNORE_EXCEPTIONS may hide: connection errors, 429, 5xx and
    answers no KV gives (a broken server or proxy, as a 5xx is)."""
    if isinstance(exc, (KVConnectionError, KVRateLimitError, KVMalformedResponseError)):
        return True
    if isinstance(exc, KVBulkError):
        if exc.partial:
            return True
        if exc.__cause__ is not None:  # a bulk call failed as a whole: judge by its cause
            return _transient(exc.__cause__)
    status = getattr(exc, "status", None)
    return status is not None and (status >= 500 or status == 429)


class CloudflareKVCache(BaseCache):
    """Django's cache backend on Workers KV. ``LOCATION`` names a ``CFKV`` alias.

    API calls per method (KVClient; LocalKV makes none): get 1, set 1, add 2,
    delete 2, touch 2, has_key 1, incr/decr 2, get_many ceil(n/100),
    set_many and delete_many 1 per 10,000 keys, clear ceil(n/1000) list +
    ceil(n/10,000) bulk deletes, get_or_set 1 on a hit and 2 on a miss.
    With a near cache, get, get_many and get_or_set answered from memory cost none.
    """

    def __init__(self, location, params):
        options = dict(params.get("OPTIONS") or {})
        for culling in ("MAX_ENTRIES", "CULL_FREQUENCY"):
            if culling in options:
                raise CFKVConfigurationError(
                    f"CloudflareKVCache does not support OPTIONS['{culling}']: Workers KV has no entry "
                    "limit to cull to. Remove it; entries leave KV when they expire."
                )
        unknown = sorted(set(options) - set(OPTION_DEFAULTS))
        if unknown:
            raise CFKVConfigurationError(
                f"Unknown CloudflareKVCache OPTIONS {', '.join(unknown)}; valid: {', '.join(OPTION_DEFAULTS)}."
            )
        super().__init__(params)
        opts = {**OPTION_DEFAULTS, **options}
        self._alias = location or "default"
        try:
            self._codec = EntryCodec(opts["SERIALIZER"], opts["COMPRESS_MIN_BYTES"])
        except ValueError as exc:
            raise CFKVConfigurationError(f"CloudflareKVCache OPTIONS: {exc}") from exc
        self._kv_prefix = opts["KV_PREFIX"]
        if not isinstance(self._kv_prefix, str) or len(self._kv_prefix.encode()) > 128:
            raise CFKVConfigurationError("OPTIONS['KV_PREFIX'] must be a str of at most 128 bytes.")
        self._hash_long_keys = _flag(opts, "HASH_LONG_KEYS")
        self._ignore_exceptions = _flag(opts, "IGNORE_EXCEPTIONS")
        self._stampede = _flag(opts, "STAMPEDE_PROTECTION")
        self._beta = _number(opts, "STAMPEDE_BETA", zero_ok=True, hint=" (0: no early recomputation)")
        self._stampede_wait = _number(opts, "STAMPEDE_WAIT", zero_ok=True, hint=" seconds (0: never wait)")
        self._near_bounds = _near_bounds(opts)

    @property
    def _kv(self):
        # The process-wide object of the alias (built and pooled once, in conf),
        # behind the process-wide near cache when there is one.
        kv, near = get_kv(self._alias), self._near()
        return kv if near is None else NearKV(kv, near)

    def _near(self):
        """Return the near cache this cache's key space shares in this process, or None (off)."""
        return near_cache(("cache", self._alias, self._kv_prefix, self.key_prefix), *self._near_bounds)

    # Keys and entries

    def kv_key(self, key, version=None):
        """Return the Workers KV key that stores ``key`` (what a Worker must read)."""
        made = self._made_key(key, version)
        self.validate_key(made)
        full = self._kv_prefix + made
        size = len(full.encode("utf-8", "surrogatepass"))
        if self._hash_long_keys and (size > limits.MAX_KEY_BYTES or _HASHED_TAIL.search(full)):
            head = full.encode("utf-8")[: limits.MAX_KEY_BYTES - _HASH_HEX - 1].decode("utf-8", "ignore")
            full = f"{head}#{hashlib.sha256(full.encode('utf-8')).hexdigest()}"
            size = len(full.encode("utf-8"))
        if size > limits.MAX_KEY_BYTES:
            hint = "" if self._hash_long_keys else " or set OPTIONS['HASH_LONG_KEYS'] = True"
            raise InvalidCacheKey(
                f"Cache key {_short(made)!r} is {size} bytes as a Workers KV key (KV_PREFIX, KEY_PREFIX, "
                f"VERSION and key in UTF-8); KV allows {limits.MAX_KEY_BYTES}. Use a shorter key{hint}."
            )
        try:
            return limits.validate_key(full)
        except KVValueError as exc:
            raise InvalidCacheKey(f"Cache key {_short(made)!r} cannot be a Workers KV key: {exc}") from None

    def _made_key(self, key, version):
        """Return the KV key after KV_PREFIX: Django's ``KEY_PREFIX:VERSION:key``, not yet validated.

        With the default KEY_FUNCTION, ``%`` and ``:`` in KEY_PREFIX and VERSION are
        percent-escaped, so the first two colons always end them: no cache's keys
        fall under another's prefix (``KEY_PREFIX="app"`` against ``"app:v2"``).
        """
        if self.key_func is not default_key_func:
            return self.make_key(key, version=version)
        version = self.version if version is None else version
        return f"{_escape(self.key_prefix)}:{_escape(version)}:{key}"

    def _expires(self, timeout):
        """Return the exact expiry for ``timeout`` (None: never), which may already be past."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else clock.now() + timeout

    def _item(self, kv_key, text, expires):
        item = {"key": kv_key, "value": text, "metadata": metadata.build(metadata.CACHE, expires=expires)}
        if expires is not None:
            item["expiration_ttl"] = metadata.kv_ttl(expires, clock.now())
        return item

    def _put(self, kv_key, text, expires):
        self._kv.put(**self._item(kv_key, text, expires))

    def _read_raw(self, kv_key, fresh=False):
        """Return (entry text, Entry) when the key holds a live entry, else (None, None). One call.

        ``fresh`` skips the near cache: read-modify-write operations read KV.
        """
        raw = (get_kv(self._alias) if fresh else self._kv).get(kv_key)
        entry = None if raw is None else self._decode(kv_key, raw)
        return (raw, entry) if entry is not None and entry.is_live(clock.now()) else (None, None)

    def _decode(self, kv_key, raw):
        """Return the Entry that ``raw`` holds, or None (logged) if it is not one this cache may read.

        Logs name the key by a fingerprint only: a cache key may hold a session id.
        """
        try:
            return self._codec.loads(raw, kv_key)
        except SignatureError as exc:
            security_logger.warning(
                "Cache on CFKV alias %r (KEY_PREFIX %r) refused the entry at KV key %s, read as a miss: %s. "
                "Someone without SECRET_KEY wrote or moved it (or an older release wrote it unsigned).",
                self._alias, self.key_prefix, _fingerprint(kv_key), exc)
        except ValueError as exc:
            logger.warning("Cache on CFKV alias %r ignored KV key %s: not a cache entry (%s).",
                           self._alias, _fingerprint(kv_key), exc)
        return None

    def _read(self, kv_key, fresh=False):
        return self._read_raw(kv_key, fresh)[1]

    def _live_metadata(self, kv_key):
        """Return True if the key holds an unexpired entry, from its metadata alone. One call."""
        meta = self._kv.get_metadata(kv_key)
        return isinstance(meta, dict) and metadata.read(meta).is_live(clock.now())

    def _guarded(self, operation, fallback, func, *args):
        """Run ``func``; with IGNORE_EXCEPTIONS, log a transient failure and return ``fallback``."""
        try:
            return func(*args)
        except KVError as exc:
            if not (self._ignore_exceptions and _transient(exc)):
                raise
            self._log_ignored(operation, exc)
            return fallback

    def _log_ignored(self, operation, exc):
        logger.warning("Cache %s on CFKV alias %r failed and was ignored: %s",
                       operation, self._alias, exc, exc_info=True)

    # Django's cache API

    def get(self, key, default=None, version=None):
        """Return the cached value or ``default``. One API call."""
        entry = self._guarded("get", None, self._read, self.kv_key(key, version))
        return default if entry is None else entry.value

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        """Store ``value``; a timeout <= 0 deletes the key instead. One API call."""
        kv_key = self.kv_key(key, version)
        self._guarded("set", None, self._store, kv_key, value, self._expires(timeout), None, key)

    def _store(self, kv_key, value, expires, delta, key):
        if expires is not None and expires <= clock.now():
            self._kv.delete(kv_key)
            return
        self._put(kv_key, self._codec.dumps(value, expires, delta, kv_key=kv_key, key=key), expires)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        """Store ``value`` unless the key holds a live entry; return True if stored. Two calls.

        Not atomic: KV has no compare-and-set. Threads of one process are
        serialized by a lock; another process may add the same key at the same
        moment, and both may return True (the last write wins).
        """
        kv_key = self.kv_key(key, version)
        expires = self._expires(timeout)
        text = self._codec.dumps(value, expires, kv_key=kv_key, key=key)
        with _key_lock(kv_key):
            return self._guarded("add", False, self._add, kv_key, text, expires)

    def _add(self, kv_key, text, expires):
        if self._read(kv_key, fresh=True) is not None:
            return False
        if expires is None or expires > clock.now():
            self._put(kv_key, text, expires)
        return True

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        """Give a live key a new timeout; return False if it is missing. Two calls (KV rewrites the value)."""
        kv_key = self.kv_key(key, version)
        with _key_lock(kv_key):
            return self._guarded("touch", False, self._retime, kv_key, self._expires(timeout))

    def _retime(self, kv_key, expires):
        raw, _entry = self._read_raw(kv_key, fresh=True)
        if raw is None:
            return False
        if expires is not None and expires <= clock.now():
            self._kv.delete(kv_key)
        else:
            self._put(kv_key, retime(raw, expires, kv_key), expires)
        return True

    def delete(self, key, version=None):
        """Delete the key; return True if it held a live entry.

        Two calls: a metadata read (KV's delete does not say whether the key
        existed), then the delete, always sent so that invalidation never relies on
        a possibly stale read.
        """
        kv_key = self.kv_key(key, version)
        return self._guarded("delete", False, self._delete, kv_key)

    def _delete(self, kv_key):
        existed = self._live_metadata(kv_key)
        self._kv.delete(kv_key)
        return existed

    def has_key(self, key, version=None):
        """Return True if the key holds a live entry. One call (metadata only, no value)."""
        return self._guarded("has_key", False, self._live_metadata, self.kv_key(key, version))

    def get_many(self, keys, version=None):
        """Return {key: value} for the live keys: ceil(n/100) bulk calls.

        KV's bulk read refuses a binary value. If a key holds one (not written
        by this cache), the keys are read one by one instead, one call each,
        and the foreign value is a miss as in get().
        """
        by_kv_key = {self.kv_key(key, version): key for key in keys}
        if not by_kv_key:
            return {}
        try:
            found = self._guarded("get_many", {}, self._kv.get_many, list(by_kv_key))
        except (KVAPIError, KVValueError) as exc:
            if isinstance(exc, KVAPIError) and exc.status != 400:
                raise
            logger.warning("Bulk read of %d keys on CFKV alias %r refused (%s); reading them one by one.",
                           len(by_kv_key), self._alias, exc)
            entries = {k: self._guarded("get_many", None, self._read, k) for k in by_kv_key}
            return {by_kv_key[k]: entry.value for k, entry in entries.items() if entry is not None}
        now, result = clock.now(), {}
        for kv_key, raw in found.items():
            entry = self._decode(kv_key, raw)
            if entry is not None and entry.is_live(now):
                result[by_kv_key[kv_key]] = entry.value
        return result

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        """Store many values: one bulk call per 10,000. Return the keys that were not stored."""
        if not data:
            return []
        expires = self._expires(timeout)
        by_kv_key = {self.kv_key(key, version): key for key in data}
        if expires is not None and expires <= clock.now():
            self.delete_many(list(data), version=version)
            return []
        items = [self._item(k, self._codec.dumps(data[key], expires, kv_key=k, key=key), expires)
                 for k, key in by_kv_key.items()]
        try:
            self._kv.put_many(items)
        except KVBulkError as exc:
            # A partial failure is Django's "keys not stored"; a failed call may be ignored.
            if not exc.partial and not (self._ignore_exceptions and _transient(exc)):
                raise
            if not exc.partial:
                self._log_ignored("set_many", exc)
            return [by_kv_key[k] for k in exc.keys if k in by_kv_key] or list(data)
        except KVError as exc:  # the call itself failed (connection, timeout): nothing is known stored
            if not (self._ignore_exceptions and _transient(exc)):
                raise
            self._log_ignored("set_many", exc)
            return list(data)
        return []

    def delete_many(self, keys, version=None):
        """Delete many keys: one bulk call per 10,000."""
        kv_keys = [self.kv_key(key, version) for key in keys]
        if kv_keys:
            self._guarded("delete_many", None, self._kv.delete_many, kv_keys)

    def incr(self, key, delta=1, version=None):
        """Add ``delta`` to a live value and return it, keeping its expiry. Two calls.

        Not atomic: a lock serializes threads of one process, but two
        processes (or locations) incrementing at once can lose an update.
        """
        kv_key = self.kv_key(key, version)
        with _key_lock(kv_key):
            entry = self._read(kv_key, fresh=True)
            if entry is None:
                raise ValueError(f"Key '{key}' not found")
            value = entry.value + delta
            text = self._codec.dumps(value, entry.expires, entry.delta, kv_key=kv_key, key=key)
            self._put(kv_key, text, entry.expires)
        return value

    def clear(self):
        """Delete this cache's entries (KV_PREFIX and KEY_PREFIX), never other data; return how many.

        Lists keys page by page (metadata only, ceil(n/1000) calls) and deletes
        entries whose metadata says ``kind: cache`` in bulk (one call per 10,000).
        Under IGNORE_EXCEPTIONS a failure is logged and None returned.
        """
        try:
            return self._guarded("clear", None, self._clear)
        finally:
            near = self._near()
            if near is not None:  # the listing may lag: forget everything this process remembers
                near.clear()

    def _clear(self):
        prefix = self._kv_prefix
        if self.key_func is default_key_func:
            prefix += f"{_escape(self.key_prefix)}:"
        return self._delete_streamed(
            info.name for info in self._kv.iter_keys(prefix=prefix or None)
            if metadata.read(info.metadata).kind == metadata.CACHE)

    def _delete_streamed(self, names):
        """Delete ``names`` as they are listed, one bulk call per 10,000, so memory stays bounded
        and an interrupted run has already deleted what it passed; return how many."""
        batch, count = [], 0
        for name in names:
            batch.append(name)
            if len(batch) >= limits.BULK_DELETE_MAX_KEYS:
                self._kv.delete_many(batch)
                count, batch = count + len(batch), []
        if batch:
            self._kv.delete_many(batch)
        return count + len(batch)

    def close(self, **kwargs):
        """Keep the pooled connection: it is shared by the whole process (see get_kv)."""

    # Stampede-protected get_or_set

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """Return the cached value, or compute ``default`` (if callable), store and return it.

        With STAMPEDE_PROTECTION (on by default) a callable ``default`` is
        computed once per process while other threads wait (at most
        STAMPEDE_WAIT seconds), and each reader may recompute early as expiry
        nears (XFetch), so that one process refreshes while the rest keep
        serving. One call on a hit, two on a miss.
        """
        kv_key = self.kv_key(key, version)
        if not (self._stampede and callable(default)):
            entry = self._guarded("get_or_set", None, self._read, kv_key)
            if entry is not None:
                return entry.value
            value = default() if callable(default) else default
            self._guarded("get_or_set", None, self._store, kv_key, value, self._expires(timeout), None, key)
            return value
        return self._get_or_compute(key, kv_key, default, timeout)

    def _refresh_early(self, entry):
        """XFetch (Vattani et al., VLDB 2015): recompute if now - delta*beta*ln(rand) >= expiry."""
        if entry.expires is None or not entry.delta:
            return False
        return clock.now() - entry.delta * self._beta * math.log(1.0 - random.random()) >= entry.expires

    def _get_or_compute(self, key, kv_key, compute, timeout):
        entry = self._guarded("get_or_set", None, self._read, kv_key)
        if entry is not None and not self._refresh_early(entry):
            return entry.value
        flight_key = (self._alias, kv_key)
        flight, leader = _join_flight(flight_key)
        if leader:
            stampede_events.record("computed" if entry is None else "early_refresh")
            return self._compute_and_store(key, kv_key, compute, timeout, flight_key, flight)
        if entry is not None:  # another thread is refreshing: serve the current value
            stampede_events.record("served_while_refreshing")
            return entry.value
        stampede_events.record("waited")
        if flight.done.wait(self._stampede_wait) and flight.value is not _MISSING:
            return flight.value
        # The computation failed or is too slow: compute without coordination.
        stampede_events.record("computed")
        value, delta = _timed(compute)
        self._guarded("get_or_set", None, self._store, kv_key, value, self._expires(timeout), delta, key)
        return value

    def _compute_and_store(self, key, kv_key, compute, timeout, flight_key, flight):
        value = _MISSING
        try:
            value, delta = _timed(compute)
            self._guarded("get_or_set", None, self._store, kv_key, value, self._expires(timeout), delta, key)
            return value
        finally:
            _land(flight_key, flight, value)  # a failure releases the waiters with nothing

    async def _aget_or_compute(self, key, kv_key, acompute, timeout):
        """The async twin of _get_or_compute, for coroutine functions.

        The first caller on this event loop computes; the others await an
        asyncio.Future it made (at most STAMPEDE_WAIT seconds, holding no
        thread), and compute themselves if it fails or is too slow.
        """
        entry = await sync_to_async(self._guarded)("get_or_set", None, self._read, kv_key)
        if entry is not None and not self._refresh_early(entry):
            return entry.value
        loop = asyncio.get_running_loop()
        flight_key = (self._alias, kv_key, id(loop))
        with _flights_lock:
            future = _flights.get(flight_key)
            leader = future is None
            if leader:
                future = _flights[flight_key] = loop.create_future()
        if not leader:
            if entry is not None:  # another task is refreshing: serve the current value
                stampede_events.record("served_while_refreshing")
                return entry.value
            stampede_events.record("waited")
            try:
                value = await asyncio.wait_for(asyncio.shield(future), self._stampede_wait)
            except asyncio.TimeoutError:
                value = _MISSING
            if value is not _MISSING:
                return value
            # The computation failed or is too slow: compute without coordination.
        stampede_events.record("computed" if entry is None or not leader else "early_refresh")
        value = _MISSING
        try:
            start = clock.monotonic()
            value = await acompute()
            delta = clock.monotonic() - start
            await sync_to_async(self._guarded)("get_or_set", None, self._store, kv_key, value,
                                               self._expires(timeout), delta, key)
            return value
        finally:
            if leader:  # a failure (or cancellation) releases the waiters with nothing
                with _flights_lock:
                    _flights.pop(flight_key, None)
                if not future.done():
                    future.set_result(value)

    # Async twins that keep the bulk and protected implementations

    async def aget_many(self, keys, version=None):
        return await sync_to_async(self.get_many, thread_sensitive=True)(keys, version=version)

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return await sync_to_async(self.set_many, thread_sensitive=True)(data, timeout, version=version)

    async def adelete_many(self, keys, version=None):
        return await sync_to_async(self.delete_many, thread_sensitive=True)(keys, version=version)

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        return await sync_to_async(self.get_or_set, thread_sensitive=True)(key, default, timeout, version=version)

    async def ahas_key(self, key, version=None):
        return await sync_to_async(self.has_key, thread_sensitive=True)(key, version=version)

    async def aincr(self, key, delta=1, version=None):
        return await sync_to_async(self.incr, thread_sensitive=True)(key, delta, version=version)

    async def adecr(self, key, delta=1, version=None):
        return await self.aincr(key, -delta, version=version)

    async def aclose(self, **kwargs):
        return self.close(**kwargs)

    # django-redis' extras

    def ttl(self, key, version=None):
        """Return whole seconds left (rounded up), None if it never expires, 0 if missing. One call.

        Under IGNORE_EXCEPTIONS a failure is logged and 0 returned (as for a missing key).
        """
        meta = self._guarded("ttl", None, self._kv.get_metadata, self.kv_key(key, version))
        if not isinstance(meta, dict):
            return 0
        expires = metadata.read(meta).expires
        return None if expires is None else max(0, math.ceil(expires - clock.now()))

    def expire(self, key, timeout, version=None):
        """Set a new timeout on a live key; return False if missing. Two calls."""
        return self.touch(key, timeout, version=version)

    def persist(self, key, version=None):
        """Make a live key never expire; return False if missing. Two calls."""
        return self.touch(key, None, version=version)

    def lock(self, *args, **kwargs):
        """Refuse: Workers KV has no compare-and-set, so no lock built on it is safe."""
        raise NotImplementedError(
            "CloudflareKVCache cannot provide lock(): Workers KV has no atomic compare-and-set, "
            "allows one write per key per second and is eventually consistent, so two processes "
            "could both believe they hold the lock. Use a database lock (select_for_update), "
            "a Cloudflare Durable Object, or Redis for mutual exclusion."
        )

    def _pattern(self, pattern, version):
        """Return (KV glob, literal list prefix, KV key head, KV key tail) for a glob on the user's key.

        Only ``pattern`` is a glob: glob characters in KV_PREFIX, KEY_PREFIX or
        the version match themselves.
        """
        marker = "\x00"
        made = self._made_key(marker, version)
        if made.count(marker) != 1:
            raise CFKVConfigurationError("keys(), iter_keys() and delete_pattern() need a KEY_FUNCTION "
                                       "that includes the key unchanged.")
        head, tail = made.split(marker)
        head = self._kv_prefix + head
        glob = _glob_escape(head) + pattern + _glob_escape(tail)
        cut = min((pattern.find(c) for c in "*?[" if c in pattern), default=None)
        literal = head + pattern + tail if cut is None else head + pattern[:cut]
        return glob, literal, head, tail

    def iter_keys(self, pattern, itersize=None, version=None):
        """Yield the user keys matching the glob ``pattern`` (KEY_PREFIX and VERSION applied).

        Lists by the pattern's longest literal prefix, reading metadata only
        (never values): one list call per ``itersize`` (default 1000) listed keys.
        Under IGNORE_EXCEPTIONS a failure is logged and ends the iteration.
        """
        keys = self._user_keys(pattern, itersize, version)
        while (key := self._guarded("iter_keys", _MISSING, next, keys, _MISSING)) is not _MISSING:
            yield key

    def keys(self, pattern, version=None):
        """Return the list of user keys matching ``pattern``; see iter_keys for the cost.

        Under IGNORE_EXCEPTIONS a failure is logged and [] returned.
        """
        return self._guarded("keys", [], list, self._user_keys(pattern, None, version))

    def _user_keys(self, pattern, itersize, version):
        glob, literal, head, tail = self._pattern(pattern, version)
        for name in self._matching(glob, literal, itersize):
            if name.startswith(head) and name.endswith(tail):
                yield name[len(head):len(name) - len(tail)]

    def delete_pattern(self, pattern, itersize=None, version=None):
        """Delete the keys matching ``pattern``; return how many.

        Calls: one list per ``itersize`` listed keys, one bulk delete per 10,000 matches.
        Under IGNORE_EXCEPTIONS a failure is logged and 0 returned.
        """
        return self._guarded("delete_pattern", 0, self._delete_pattern, pattern, itersize, version)

    def _delete_pattern(self, pattern, itersize, version):
        glob, literal, _head, _tail = self._pattern(pattern, version)
        return self._delete_streamed(self._matching(glob, literal, itersize))

    def _matching(self, glob, literal, itersize):
        """Yield names of live cache entries matching ``glob``, listed by the prefix ``literal``."""
        limit = limits.validate_list_limit(itersize or limits.LIST_MAX_LIMIT)
        now = clock.now()
        for page in iter_pages(self._kv, literal or None, limit):
            for info in page.keys:
                meta = metadata.read(info.metadata)
                if meta.kind == metadata.CACHE and meta.is_live(now) and fnmatch.fnmatchcase(info.name, glob):
                    yield info.name


def _near_bounds(opts):
    """Return (timeout, max entries, max bytes) of the near cache from OPTIONS; timeout 0 is off."""
    if opts["NEAR_CACHE_TIMEOUT"] is None:
        opts = {**opts, "NEAR_CACHE_TIMEOUT": 0}
    return (_number(opts, "NEAR_CACHE_TIMEOUT", zero_ok=True, hint=" seconds (0: off)"),
            _number(opts, "NEAR_CACHE_MAX_ENTRIES"), _number(opts, "NEAR_CACHE_MAX_BYTES"))


def _number(opts, name, *, zero_ok=False, hint=""):
    """Return OPTIONS[name] if it is a finite number above 0 (or 0 when ``zero_ok``)."""
    value = opts[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            value < 0 or (value == 0 and not zero_ok):
        raise CFKVConfigurationError(f"CloudflareKVCache OPTIONS['{name}'] must be a number "
                                   f"{'of 0 or more' if zero_ok else 'above 0'}{hint}; got {value!r}.")
    return value


def _flag(opts, name):
    """Return OPTIONS[name] if it is True or False (a string such as "false" would read as True)."""
    if not isinstance(opts[name], bool):
        raise CFKVConfigurationError(f"CloudflareKVCache OPTIONS['{name}'] must be True or False; got {opts[name]!r}.")
    return opts[name]


def _escape(part):
    """Return KEY_PREFIX or VERSION with ``%`` and ``:`` percent-escaped (unchanged without them)."""
    return str(part).replace("%", "%25").replace(":", "%3A")


def _glob_escape(text):
    """Return ``text`` as a glob matching itself (as glob.escape, for fnmatch)."""
    return re.sub(r"([*?[])", r"[\1]", text)


def _fingerprint(kv_key):
    """Return a log-safe stand-in for a KV key: the start of its SHA-256."""
    return "sha256:" + hashlib.sha256(kv_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _short(text, size=80):
    return text if len(text) <= size else text[:size] + "..."


def _timed(compute):
    start = clock.monotonic()
    value = compute()
    return value, clock.monotonic() - start


# Cache-aside decorator

def cached(timeout, *, key=None, alias="default", version=None):
    """Cache a function's results (sync or async) with stampede protection.

    The cache key is ``cached:<module.qualname>:<arguments as JSON>`` (the
    argument part hashed with SHA-256 when long). Arguments that are not plain
    JSON (tuples, sets, dicts with other keys, dates, model instances, other
    values by their repr) are tagged with their type, so different arguments
    get different keys: ``{1, 2}``, ``[1, 2]`` and ``(1, 2)``, ``{1: "x"}``
    and ``{"1": "x"}``, a date and its ISO string. ``key`` replaces it: a str replaces the
    qualified name, a callable takes the function's arguments and returns the
    whole key. ``None`` results are cached too. The wrapped
    function gains ``invalidate(*args, **kwargs)`` and ``ainvalidate(...)``.
    """
    def decorator(func):
        def cache_key(args, kwargs):
            if callable(key):
                return key(*args, **kwargs)
            name = key or f"{func.__module__}.{func.__qualname__}"
            return f"cached:{name}:{_arguments_key(args, kwargs)}"

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def wrapper(*args, **kwargs):
                cache, k = caches[alias], cache_key(args, kwargs)
                if isinstance(cache, CloudflareKVCache) and cache._stampede:
                    kv_key = cache.kv_key(k, version)
                    return await cache._aget_or_compute(k, kv_key, lambda: func(*args, **kwargs), timeout)
                value = await cache.aget(k, _MISSING, version=version)
                if value is _MISSING:
                    value = await func(*args, **kwargs)
                    await cache.aset(k, value, timeout, version=version)
                return value
        else:
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return caches[alias].get_or_set(cache_key(args, kwargs), lambda: func(*args, **kwargs),
                                                timeout, version=version)

        def invalidate(*args, **kwargs):
            """Delete the cached result for these arguments; return True if there was one."""
            return caches[alias].delete(cache_key(args, kwargs), version=version)

        async def ainvalidate(*args, **kwargs):
            return await caches[alias].adelete(cache_key(args, kwargs), version=version)

        wrapper.invalidate, wrapper.ainvalidate, wrapper.cache_key = invalidate, ainvalidate, \
            lambda *a, **kw: cache_key(a, kw)
        return wrapper

    return decorator


_LONG_ARGUMENTS = 200
_JSON_SCALARS = (str, int, float, bool, type(None))


def _arguments_key(args, kwargs):
    """Return a text form of the arguments that is the same in every process and differs between
    arguments that differ (see _encode)."""
    text = _json([[_encode(arg) for arg in args], _encode(kwargs)])
    if len(text) > _LONG_ARGUMENTS:  # a short form starts with "[", so it never looks like a hashed one
        return "sha256-" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def _json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _encode(obj):
    """Return a JSON form of an argument that no other argument shares.

    Strings, numbers, booleans, None, lists and dicts whose keys are strings not
    starting with ``~`` are written as JSON. Everything else becomes a one-key
    object whose key starts with ``~`` and names its type: ``~tuple``, ``~set``,
    ``~dict`` (any other dict, as sorted [key, value] pairs), ``~model``, and
    ``~module.Type`` for dates (their ISO form) and other values (their repr).
    So a plain dict can never pass for a tagged value, and every JSON tree
    decodes to one argument.
    """
    kind = type(obj)
    if kind in _JSON_SCALARS:  # exact types: a subclass (an IntEnum) is tagged by its repr below
        return obj
    if isinstance(obj, list):
        return [_encode(item) for item in obj]
    if isinstance(obj, dict):
        if all(type(k) is str and not k.startswith("~") for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"~dict": sorted(([_encode(k), _encode(v)] for k, v in obj.items()), key=_json)}
    if isinstance(obj, tuple):
        return {"~tuple": [_encode(item) for item in obj]}
    if isinstance(obj, (set, frozenset)):  # equal sets are one value: one key for both types
        return {"~set": sorted((_encode(item) for item in obj), key=_json)}
    if isinstance(obj, Model):
        if obj.pk is None:
            raise TypeError(f"cached() cannot build a key from an unsaved {obj._meta.label} instance (its pk "
                            "is None, as for every unsaved one). Save it first, or pass key=callable.")
        return {"~model": [obj._meta.label, _encode(obj.pk)]}
    tag = f"~{kind.__module__}.{kind.__qualname__}"  # always has a dot: no clash with the tags above
    if hasattr(obj, "isoformat"):  # date, datetime, time
        return {tag: obj.isoformat()}
    text = repr(obj)
    if " at 0x" in text:
        raise TypeError(f"cached() cannot build a stable key from {text}: its repr differs between "
                        "processes. Pass key=callable to build the key yourself.")
    return {tag: text}
