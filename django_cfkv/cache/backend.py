"""CloudflareKVCache: Django's cache API over a Workers KV namespace (the facade).

The facade turns Django keys into KV keys (:mod:`.keys`) and timeouts into exact
expiries (``_expires``); the entries of the cache are read and written by
:mod:`.entries`, encoded by :mod:`.codec`; IGNORE_EXCEPTIONS is :mod:`.failures`,
stampede protection :mod:`.stampede`, and django-redis' extra methods live in
:mod:`.extras`.
"""

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from .. import clock, limits, metadata
from ..exceptions import CFKVConfigurationError, KVAPIError, KVBulkError, KVError, KVValueError
from ..types import KeyPage
from . import options
from .codec import retime
from .entries import Entries, akey_lock, bulk_refused, key_lock
from .extras import DjangoRedisExtras
from .failures import Guard
from .keys import cache_prefix, made_key, to_kv_key
from .plans import Call, Plan, arun, delete_listed, run
from .stampede import AStore, Stampede, Store

logger = logging.getLogger("django_cfkv.cache")

_MISSING = object()


class CloudflareKVCache(DjangoRedisExtras):
    """Django's cache backend on Workers KV. ``LOCATION`` names a ``CFKV`` alias.

    API calls per method (KVClient; LocalKV makes none): get 1, set 1 (with nx
    or xx 2), add 2, delete 2, touch 2, has_key 1, incr/decr 2, get_many
    ceil(n/100), set_many 1 per 10,000 keys, delete_many ceil(n/100) reads + 1
    per 10,000 keys, clear ceil(n/1000) list + ceil(n/10,000) bulk deletes,
    get_or_set 1 on a hit and 2 on a miss; django-redis' extras as their docstrings say.
    With a near cache, get, get_many and get_or_set answered from memory cost none.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self._alias = location or "default"
        try:
            opts = options.parse(params)
        except CFKVConfigurationError as exc:
            # Django's own cache checks build every cache: django-cfkv's check reports the mistake with its
            # id and hint, and the first use of the cache raises it (see __getattr__).
            self._misconfigured = exc
            return
        self._kv_prefix = opts.kv_prefix
        self._hash_long_keys = opts.hash_long_keys
        self._guard = Guard(self._alias, opts.ignore_exceptions, opts.log_ignored_exceptions, opts.logger_name)
        # django-redis' names for the same two settings, which code written for it reads.
        self._ignore_exceptions = opts.ignore_exceptions
        self._log_ignored_exceptions = opts.log_ignored_exceptions is True
        self._stampede = (Stampede(self._alias, opts.stampede_beta, opts.stampede_wait)
                          if opts.stampede_protection else None)
        # The near cache is shared by every cache object (one per thread) of this key space.
        space = ("cache", self._alias, self._kv_prefix, self.key_prefix)
        self._entries = Entries(self._alias, opts.codec, self.key_prefix, space, opts.near_bounds)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes __init__ did not set: those of a cache whose OPTIONS were refused.
        error = self.__dict__.get("_misconfigured")
        if error is not None and name.startswith("_") and not name.startswith("__"):
            raise error
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # Keys and timeouts

    def kv_key(self, key: Any, version: int | None = None) -> str:
        """Return the Workers KV key that stores ``key`` (what a Worker must read)."""
        made = made_key(self, key, version)
        self.validate_key(made)
        return to_kv_key(made, self._kv_prefix, self._hash_long_keys)

    def _expires(self, timeout: Any) -> float | None:
        """Return the exact expiry for ``timeout`` (None: never), which may already be past."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else clock.now() + timeout

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
        if _only_nx(nx, xx):
            return self.add(key, value, timeout, version)
        if xx:
            return self._locked("set", False, *self._replace(key, value, timeout, version))
        self._guard("set", None, self._entries.store, self.kv_key(key, version), value, self._expires(timeout),
                    None, key)
        return None

    def _replace(self, key: Any, value: Any, timeout: Any, version: int | None) -> tuple[str, Plan[bool]]:
        """Return (KV key, the plan of set(xx=True))."""
        kv_key, text, expires = self._entry_text(key, value, timeout, version)

        def plan() -> Plan[bool]:
            if (yield from self._entries.reading(kv_key, fresh=True))[1] is None:
                return False
            if expires is None or expires > clock.now():
                yield from self._entries.putting(kv_key, text, expires)
            else:
                yield Call("delete", (kv_key,))
            return True

        return kv_key, plan()

    def _entry_text(self, key: Any, value: Any, timeout: Any, version: int | None) -> tuple[str, str, float | None]:
        """Return (KV key, entry text, exact expiry) of storing ``value`` under ``key``."""
        kv_key = self.kv_key(key, version)
        expires = self._expires(timeout)
        return kv_key, self._entries.codec.dumps(value, expires, kv_key=kv_key, key=key), expires

    def _locked(self, operation: str, fallback: Any, kv_key: str, plan: Plan[Any]) -> Any:
        """Follow a read-modify-write's plan holding its key's lock, guarded as ``operation``."""
        with key_lock(kv_key):
            return self._guard(operation, fallback, run, plan, self._entries)

    async def _alocked(self, operation: str, fallback: Any, kv_key: str, plan: Plan[Any]) -> Any:
        """The async twin of :meth:`_locked`: the running loop's lock of the key, the plan's calls awaited."""
        async with akey_lock(kv_key):
            return await self._guard.acall(operation, fallback, arun, plan, self._entries)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Store ``value`` unless the key holds a live entry; return True if stored. Two calls.

        Not atomic: KV has no compare-and-set. Threads of one process are
        serialized by a lock; another process may add the same key at the same
        moment, and both may return True (the last write wins).
        """
        return self._locked("add", False, *self._add(key, value, timeout, version))

    def _add(self, key: Any, value: Any, timeout: Any, version: int | None) -> tuple[str, Plan[bool]]:
        """Return (KV key, the plan of add())."""
        kv_key, text, expires = self._entry_text(key, value, timeout, version)

        def plan() -> Plan[bool]:
            if (yield from self._entries.reading(kv_key, fresh=True))[1] is not None:
                return False
            if expires is None or expires > clock.now():
                yield from self._entries.putting(kv_key, text, expires)
            return True

        return kv_key, plan()

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give a live key a new timeout; return False if it is missing. Two calls (KV rewrites the value)."""
        return self._set_expiry("touch", key, self._expires(timeout), version)

    def _set_expiry(self, operation: str, key: Any, expires: float | None, version: int | None) -> bool:
        """Give a live key the exact expiry ``expires`` (None: never; past: delete it); False if it is missing."""
        kv_key = self.kv_key(key, version)
        return self._locked(operation, False, kv_key, self._retime(kv_key, expires))

    async def _aset_expiry(self, operation: str, key: Any, expires: float | None, version: int | None) -> bool:
        """The async twin of :meth:`_set_expiry`."""
        kv_key = self.kv_key(key, version)
        return await self._alocked(operation, False, kv_key, self._retime(kv_key, expires))

    def _retime(self, kv_key: str, expires: float | None) -> Plan[bool]:
        raw, _entry = yield from self._entries.reading(kv_key, fresh=True)
        if raw is None:
            return False
        if expires is not None and expires <= clock.now():
            yield Call("delete", (kv_key,))
        else:
            yield from self._entries.putting(kv_key, retime(raw, expires, kv_key), expires)
        return True

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

    def _log_bulk_refused(self, n: int, exc: KVError) -> None:
        logger.warning("Bulk read of %d keys on CFKV alias %r refused (%s); reading them one by one.",
                       n, self._alias, exc)

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

    def _set_many_items(self, data: Mapping[Any, Any], timeout: Any,
                        version: int | None) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """Return ({KV key: key}, the items to write), the items None when the timeout has passed (delete them)."""
        expires = self._expires(timeout)
        by_kv_key = {self.kv_key(key, version): key for key in data}
        if expires is not None and expires <= clock.now():
            return by_kv_key, None
        codec = self._entries.codec
        return by_kv_key, [self._entries.item(k, codec.dumps(data[key], expires, kv_key=k, key=key), expires)
                           for k, key in by_kv_key.items()]

    def _not_stored(self, data: Mapping[Any, Any], by_kv_key: dict[str, Any], exc: KVError) -> list[Any]:
        """Return the keys a failed bulk write left unstored, or raise ``exc``: a partial failure is Django's
        "keys not stored"; a failed call (connection, timeout: nothing known stored) may be ignored."""
        partial = isinstance(exc, KVBulkError) and exc.partial
        if not partial:
            if not self._guard.ignores(exc):
                raise exc
            self._guard.log_ignored("set_many", exc)
        if isinstance(exc, KVBulkError):
            return [by_kv_key[k] for k in exc.keys if k in by_kv_key] or list(data)
        return list(data)

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

    def _incr(self, key: Any, kv_key: str, delta: int, ignore_key_check: bool) -> Plan[Any]:
        _raw, entry = yield from self._entries.reading(kv_key, fresh=True)
        if entry is None and not ignore_key_check:
            raise ValueError(f"Key '{key}' not found")
        value = delta if entry is None else entry.value + delta
        expires, took = (None, None) if entry is None else (entry.expires, entry.delta)
        text = self._entries.codec.dumps(value, expires, took, kv_key=kv_key, key=key)
        yield from self._entries.putting(kv_key, text, expires)
        return value

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

    def _clear(self) -> Plan[int]:
        prefix = cache_prefix(self, self._kv_prefix)
        return delete_listed(prefix or None, limits.LIST_MAX_LIMIT, _cache_entries)

    def _forget_near(self) -> None:
        near = self._entries.near()
        if near is not None:  # the listing may lag: forget everything this process remembers
            near.clear()

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

    async def _aget_or_compute(self, key: Any, acompute: Callable[[], Awaitable[Any]], timeout: Any,
                               version: int | None) -> Any:
        """Return the cached value, or await ``acompute()``, store and return it (``@cached`` on a
        coroutine function: get_or_set takes only a plain callable)."""
        if self._stampede is None:
            value = await self.aget(key, _MISSING, version=version)
            if value is _MISSING:
                value = await acompute()
                await self.aset(key, value, timeout, version=version)
            return value
        kv_key = self.kv_key(key, version)
        entry = await self._guard.acall("get_or_set", None, self._entries.aread, kv_key)
        return await self._stampede.aget_or_compute(kv_key, entry, acompute,
                                                    self._astore_computed(key, kv_key, timeout))

    def _store_computed(self, key: Any, kv_key: str, timeout: Any) -> Store:
        """Return how stampede protection stores a value it computed for ``kv_key`` (guarded, as get_or_set)."""
        def store(value: Any, delta: float) -> None:
            self._guard("get_or_set", None, self._entries.store, kv_key, value, self._expires(timeout), delta, key)

        return store

    def _astore_computed(self, key: Any, kv_key: str, timeout: Any) -> AStore:
        """The async twin of :meth:`_store_computed`."""
        async def store(value: Any, delta: float) -> None:
            await self._guard.acall("get_or_set", None, self._entries.astore, kv_key, value, self._expires(timeout),
                                    delta, key)

        return store

    # Django's async cache API. Each awaits the KV object's async twins (on the event loop with the
    # async extra), with the same calls, IGNORE_EXCEPTIONS, near cache and stampede protection as its
    # blocking namesake. Read-modify-writes (add, touch, incr, set with nx or xx) and clear() follow the
    # same plan as their namesake (.plans), its calls awaited; a read-modify-write holds its key's
    # asyncio lock instead of the threading one, which a coroutine may not hold across an await.

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        entry = await self._guard.acall("get", None, self._entries.aread, self.kv_key(key, version))
        return default if entry is None else entry.value

    async def aset(  # type: ignore[override]  # as set()
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, *,
        nx: bool = False, xx: bool = False,
    ) -> bool | None:
        if _only_nx(nx, xx):
            return await self.aadd(key, value, timeout, version)
        if xx:
            return await self._alocked("set", False, *self._replace(key, value, timeout, version))
        kv_key = self.kv_key(key, version)
        await self._guard.acall("set", None, self._entries.astore, kv_key, value, self._expires(timeout), None, key)
        return None

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self._guard.acall("delete", False, self._adelete, self.kv_key(key, version))

    async def _adelete(self, kv_key: str) -> bool:
        existed = await self._entries.alive_metadata(kv_key)
        await (await self._entries.akv()).adelete(kv_key)
        return existed

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self._guard.acall("has_key", False, self._entries.alive_metadata, self.kv_key(key, version))

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        by_kv_key = {self.kv_key(key, version): key for key in keys}
        if not by_kv_key:
            return {}
        kv = await self._entries.akv()
        try:
            found: dict[str, bytes] = await self._guard.acall("get_many", {}, kv.aget_many, list(by_kv_key))
        except (KVAPIError, KVValueError) as exc:
            if not bulk_refused(exc):
                raise
            self._log_bulk_refused(len(by_kv_key), exc)
            entries = {k: await self._guard.acall("get_many", None, self._entries.aread, k) for k in by_kv_key}
            return {by_kv_key[k]: entry.value for k, entry in entries.items() if entry is not None}
        return {by_kv_key[k]: entry.value for k, entry in self._entries.live(found).items()}

    async def aset_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                        version: int | None = None) -> list[Any]:
        if not data:
            return []
        by_kv_key, items = self._set_many_items(data, timeout, version)
        kv = await self._entries.akv()
        if items is None:
            await self._guard.acall("set_many", None, kv.adelete_many, list(by_kv_key))
            return []
        try:
            await kv.aput_many(items)
        except KVError as exc:
            return self._not_stored(data, by_kv_key, exc)
        return []

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> int | None:  # type: ignore[override]
        kv_keys = list(dict.fromkeys(self.kv_key(key, version) for key in keys))
        if not kv_keys:
            return None
        return await self._guard.acall("delete_many", None, self._adelete_many, kv_keys)

    async def _adelete_many(self, kv_keys: list[str]) -> int:
        live = await self._entries.acount_live(kv_keys)
        await (await self._entries.akv()).adelete_many(kv_keys)
        return live

    async def aget_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT,
                          version: int | None = None) -> Any:
        kv_key = self.kv_key(key, version)
        entry = await self._guard.acall("get_or_set", None, self._entries.aread, kv_key)
        if self._stampede is None or not callable(default):
            if entry is not None:
                return entry.value
            value = default() if callable(default) else default  # called on the loop, as Django's aget_or_set does
            await self._guard.acall("get_or_set", None, self._entries.astore, kv_key, value, self._expires(timeout),
                                    None, key)
            return value

        async def acompute() -> Any:
            return default()

        return await self._stampede.aget_or_compute(kv_key, entry, acompute,
                                                    self._astore_computed(key, kv_key, timeout))

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return await self._alocked("add", False, *self._add(key, value, timeout, version))

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return await self._aset_expiry("touch", key, self._expires(timeout), version)

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None, *,
                    ignore_key_check: bool = False) -> Any:
        kv_key = self.kv_key(key, version)
        async with akey_lock(kv_key):
            return await arun(self._incr(key, kv_key, delta, ignore_key_check), self._entries)

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await self.aincr(key, -delta, version=version)

    async def aclear(self) -> int | None:  # type: ignore[override]  # as clear()
        try:
            return await self._guard.acall("clear", None, arun, self._clear(), self._entries)
        finally:
            self._forget_near()

    async def aclose(self, **kwargs: Any) -> None:
        return self.close(**kwargs)


def _only_nx(nx: bool, xx: bool) -> bool:
    """Return True if set() stores as add() does (``nx``); refuse both at once."""
    if nx and xx:
        raise ValueError("set() takes nx=True or xx=True, not both.")
    return nx


def _cache_entries(page: KeyPage) -> list[str]:
    """The names on a listed page that hold this library's cache entries (their metadata says so)."""
    return [info.name for info in page.keys if metadata.read(info.metadata).kind == metadata.CACHE]
