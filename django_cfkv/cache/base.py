"""What CloudflareKVCache's blocking and async methods share: its settings read once, Django keys to KV
keys, timeouts to exact expiries, and the plans of its read-modify-writes (set with xx, add, touch, incr,
clear), each followed blocking (:mod:`.backend`) or awaited (:mod:`.aio`)."""

import logging
from collections.abc import Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from .. import clock, limits, metadata
from ..exceptions import CFKVConfigurationError, KVBulkError, KVError
from ..text import one_line
from ..types import KeyPage
from . import options
from .codec import retime
from .entries import Entries, akey_lock, key_lock
from .extras import DjangoRedisExtras
from .failures import Guard
from .keys import cache_prefix, made_key, to_kv_key
from .plans import Call, Plan, arun, delete_listed, run
from .stampede import AStore, Stampede, Store

logger = logging.getLogger("django_cfkv.cache")


class CacheBase(DjangoRedisExtras):
    """The parts of CloudflareKVCache under both its blocking methods and their async twins."""

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

    def _log_bulk_refused(self, n: int, exc: KVError) -> None:
        logger.warning("Bulk read of %d keys on CFKV alias %r refused (%s); reading them one by one.",
                       n, self._alias, exc)

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


    def _incr(self, key: Any, kv_key: str, delta: int, ignore_key_check: bool) -> Plan[Any]:
        _raw, entry = yield from self._entries.reading(kv_key, fresh=True)
        if entry is None and not ignore_key_check:
            raise ValueError(f"Key '{one_line(str(key))}' not found")  # the key may hold what a client sent
        value = delta if entry is None else entry.value + delta
        expires, took = (None, None) if entry is None else (entry.expires, entry.delta)
        text = self._entries.codec.dumps(value, expires, took, kv_key=kv_key, key=key)
        yield from self._entries.putting(kv_key, text, expires)
        return value

    def _clear(self) -> Plan[int]:
        prefix = cache_prefix(self, self._kv_prefix)
        return delete_listed(prefix or None, limits.LIST_MAX_LIMIT, _cache_entries)

    def _forget_near(self) -> None:
        near = self._entries.near()
        if near is not None:  # the listing may lag: forget everything this process remembers
            near.clear()

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

def only_nx(nx: bool, xx: bool) -> bool:
    """Return True if set() stores as add() does (``nx``); refuse both at once."""
    if nx and xx:
        raise ValueError("set() takes nx=True or xx=True, not both.")
    return nx


def _cache_entries(page: KeyPage) -> list[str]:
    """The names on a listed page that hold this library's cache entries (their metadata says so)."""
    return [info.name for info in page.keys if metadata.read(info.metadata).kind == metadata.CACHE]
