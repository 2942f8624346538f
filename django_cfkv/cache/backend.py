"""CloudflareKVCache: Django's cache API over a Workers KV namespace (the facade).

The facade turns Django keys into KV keys (:mod:`.keys`) and timeouts into exact
expiries (:mod:`.base`, which also writes the read-modify-writes' plans); the entries
of the cache are read and written by :mod:`.entries`, encoded by :mod:`.codec`;
IGNORE_EXCEPTIONS is :mod:`.failures`, stampede protection :mod:`.stampede`, the
async methods :mod:`.aio`, and django-redis' extra methods live in :mod:`.extras`.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from ..exceptions import KVAPIError, KVError, KVValueError
from .aio import AsyncCacheAPI
from .base import only_nx
from .entries import bulk_refused, key_lock
from .plans import run


class CloudflareKVCache(AsyncCacheAPI):
    """Django's cache backend on Workers KV. ``LOCATION`` names a ``CFKV`` alias.

    API calls per method (KVClient; LocalKV makes none): get 1, set 1 (with nx
    or xx 2), add 2, delete 2, touch 2, has_key 1, incr/decr 2, get_many
    ceil(n/100), set_many 1 per 10,000 keys, delete_many ceil(n/100) reads + 1
    per 10,000 keys, clear ceil(n/1000) list + ceil(n/10,000) bulk deletes,
    get_or_set 1 on a hit and 2 on a miss; django-redis' extras as their docstrings say.
    With a near cache, get, get_many and get_or_set answered from memory cost none.
    """

    # Django's cache API

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the cached value or ``default``. One API call."""
        entry = self._guard("get", None, self._entries.read, self.kv_key(key, version))
        return default if entry is None else entry.value

    def set(  # type: ignore[override]  # Django's returns None; with nx or xx this says whether it stored
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, *,
        nx: bool = False, xx: bool = False,
    ) -> bool | None:
        """Store ``value``; a timeout <= 0 deletes the key instead. One API call.

        As django-redis: ``nx=True`` stores only if the key holds no live entry
        (as ``add()``), ``xx=True`` only if it does; either returns True if it
        stored (or, with a timeout <= 0, would have), else False. Two calls, one
        when ``nx`` finds the key. Not atomic: KV has no compare-and-set, so
        another process may write the key between the read and the write (threads
        of one process are serialized).
        """
        if only_nx(nx, xx):
            return self.add(key, value, timeout, version)
        if xx:
            return self._locked("set", False, *self._replace(key, value, timeout, version))
        self._guard("set", None, self._entries.store, self.kv_key(key, version), value, self._expires(timeout),
                    None, key)
        return None

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Store ``value`` unless the key holds a live entry; return True if stored. Two calls.

        Not atomic: KV has no compare-and-set. Threads of one process are
        serialized by a lock; another process may add the same key at the same
        moment, and both may return True (the last write wins).
        """
        return self._locked("add", False, *self._add(key, value, timeout, version))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give a live key a new timeout; return False if it is missing. Two calls (KV rewrites the value)."""
        return self._set_expiry("touch", key, self._expires(timeout), version)

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Delete the key; return True if it held a live entry.

        Two calls: a metadata read (KV's delete does not say whether the key
        existed), then the delete, always sent so that invalidation never relies on
        a possibly stale read.
        """
        kv_key = self.kv_key(key, version)
        return self._guard("delete", False, self._delete, kv_key)

    def _delete(self, kv_key: str) -> bool:
        existed = self._entries.live_metadata(kv_key)
        self._entries.kv.delete(kv_key)
        return existed

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Return True if the key holds a live entry. One call (metadata only, no value)."""
        return self._guard("has_key", False, self._entries.live_metadata, self.kv_key(key, version))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return {key: value} for the live keys: ceil(n/100) bulk calls.

        KV's bulk read refuses a binary value. If a key holds one (not written
        by this cache), the keys are read one by one instead, one call each,
        and the foreign value is a miss as in get().
        """
        by_kv_key = {self.kv_key(key, version): key for key in keys}
        if not by_kv_key:
            return {}
        try:
            found: dict[str, bytes] = self._guard("get_many", {}, self._entries.kv.get_many, list(by_kv_key))
        except (KVAPIError, KVValueError) as exc:
            if not bulk_refused(exc):
                raise
            self._log_bulk_refused(len(by_kv_key), exc)
            entries = {k: self._guard("get_many", None, self._entries.read, k) for k in by_kv_key}
            return {by_kv_key[k]: entry.value for k, entry in entries.items() if entry is not None}
        return {by_kv_key[k]: entry.value for k, entry in self._entries.live(found).items()}

    def set_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list[Any]:
        """Store many values: one bulk call per 10,000. Return the keys that were not stored."""
        if not data:
            return []
        by_kv_key, items = self._set_many_items(data, timeout, version)
        if items is None:
            self._guard("set_many", None, self._entries.kv.delete_many, list(by_kv_key))
            return []
        try:
            self._entries.kv.put_many(items)
        except KVError as exc:
            return self._not_stored(data, by_kv_key, exc)
        return []

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> int | None:  # type: ignore[override]
        """Delete many keys; return how many held a live entry, as django-redis does (None for no keys, as
        Django's API does).

        Calls: ceil(n/100) bulk reads (KV's delete does not say whether a key
        existed, as for delete()), then one bulk delete per 10,000 keys, always
        sent. Under IGNORE_EXCEPTIONS a failure is logged and None returned.
        """
        kv_keys = list(dict.fromkeys(self.kv_key(key, version) for key in keys))
        if not kv_keys:
            return None
        return self._guard("delete_many", None, self._delete_many, kv_keys)

    def _delete_many(self, kv_keys: list[str]) -> int:
        live = self._entries.count_live(kv_keys)
        self._entries.kv.delete_many(kv_keys)
        return live

    def incr(self, key: Any, delta: int = 1, version: int | None = None, *, ignore_key_check: bool = False) -> Any:
        """Add ``delta`` to a live value and return it, keeping its expiry. Two calls.

        A missing key raises ValueError; with ``ignore_key_check=True`` (as
        django-redis) it is created at ``delta``, with no expiry, as Redis' INCRBY
        creates it. Not atomic: a lock serializes threads of one process, but two
        processes (or locations) incrementing at once can lose an update.
        """
        kv_key = self.kv_key(key, version)
        with key_lock(kv_key):
            return run(self._incr(key, kv_key, delta, ignore_key_check), self._entries)

    def clear(self) -> int | None:  # type: ignore[override]  # Django's returns None; this says how many
        """Delete this cache's entries (KV_PREFIX and KEY_PREFIX), never other data; return how many.

        Lists keys page by page (metadata only, ceil(n/1000) calls) and deletes
        entries whose metadata says ``kind: cache`` in bulk (one call per 10,000).
        Under IGNORE_EXCEPTIONS a failure is logged and None returned.
        """
        try:
            return self._guard("clear", None, run, self._clear(), self._entries)
        finally:
            self._forget_near()

    def close(self, **kwargs: Any) -> None:
        """Keep the pooled connection: it is shared by the whole process (see get_kv)."""

    # Stampede-protected get_or_set

    def get_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> Any:
        """Return the cached value, or compute ``default`` (if callable), store and return it.

        With STAMPEDE_PROTECTION (on by default) a callable ``default`` is
        computed once per process while other threads wait (at most
        STAMPEDE_WAIT seconds), and each reader may recompute early as expiry
        nears (XFetch), so that one process refreshes while the rest keep
        serving. One call on a hit, two on a miss.
        """
        kv_key = self.kv_key(key, version)
        if self._stampede is None or not callable(default):
            entry = self._guard("get_or_set", None, self._entries.read, kv_key)
            if entry is not None:
                return entry.value
            value = default() if callable(default) else default
            self._guard("get_or_set", None, self._entries.store, kv_key, value, self._expires(timeout), None, key)
            return value
        entry = self._guard("get_or_set", None, self._entries.read, kv_key)
        return self._stampede.get_or_compute(kv_key, entry, default, self._store_computed(key, kv_key, timeout))

