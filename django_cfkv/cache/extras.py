"""django-redis' extra cache methods, with django-redis' names and meanings, on CloudflareKVCache.

One method per name. Each is built on the backend's own parts, named below:
``kv_key()``, ``_expires()`` and ``_set_expiry()``, the IGNORE_EXCEPTIONS guard,
the cache's entries, and the glob patterns of :mod:`.patterns`. Where KV cannot keep django-redis'
promise (``lock()``), the method refuses and says why.
"""

import datetime
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from .. import clock, metadata
from . import patterns
from .entries import Entries
from .failures import Guard
from .plans import Plan, arun, delete_listed, run

#: A moment for expire_at and pexpire_at: a datetime (naive: local time, as redis-py reads it) or a Unix time.
When = datetime.datetime | int | float


class DjangoRedisExtras(BaseCache):
    """django-redis' extras: ttl, pttl, expire, pexpire, expire_at, pexpire_at, persist, keys, iter_keys,
    delete_pattern, lock; and their async twins (attl... aiter_keys an async iterator), which follow the
    same plans and checks with each KV call awaited."""

    # Set by CloudflareKVCache.__init__.
    _guard: Guard
    _entries: Entries
    _kv_prefix: str

    def kv_key(self, key: Any, version: int | None = None) -> str:
        raise NotImplementedError("subclasses of DjangoRedisExtras must provide a kv_key() method")

    def _expires(self, timeout: Any) -> float | None:
        raise NotImplementedError("subclasses of DjangoRedisExtras must provide an _expires() method")

    def _set_expiry(self, operation: str, key: Any, expires: float | None, version: int | None) -> bool:
        raise NotImplementedError("subclasses of DjangoRedisExtras must provide a _set_expiry() method")

    async def _aset_expiry(self, operation: str, key: Any, expires: float | None, version: int | None) -> bool:
        raise NotImplementedError("subclasses of DjangoRedisExtras must provide an _aset_expiry() method")

    # Expiry

    def ttl(self, key: Any, version: int | None = None) -> int | None:
        """Return whole seconds left (rounded up), None if it never expires, 0 if missing. One call.

        Under IGNORE_EXCEPTIONS a failure is logged and 0 returned (as for a missing key).
        """
        return _whole_seconds(self._left("ttl", key, version))

    def pttl(self, key: Any, version: int | None = None) -> int | None:
        """Return milliseconds left (rounded up), None if it never expires, 0 if missing. One call.

        Entries carry their expiry to the millisecond. Under IGNORE_EXCEPTIONS a
        failure is logged and 0 returned (as for a missing key).
        """
        return _milliseconds(self._left("pttl", key, version))

    def _left(self, operation: str, key: Any, version: int | None) -> float | None:
        """Return the seconds the key has left (0 if missing or expired), None if it never expires."""
        return _left(self._guard(operation, None, self._entries.kv.get_metadata, self.kv_key(key, version)))

    async def _aleft(self, operation: str, key: Any, version: int | None) -> float | None:
        kv = await self._entries.akv()
        return _left(await self._guard.acall(operation, None, kv.aget_metadata, self.kv_key(key, version)))

    def expire(self, key: Any, timeout: Any, version: int | None = None) -> bool:
        """Give a live key a timeout in seconds (None: never expires); return False if missing. Two calls."""
        return self._set_expiry("expire", key, self._expires(timeout), version)

    def pexpire(self, key: Any, timeout: Any, version: int | None = None) -> bool:
        """Give a live key a timeout in milliseconds; return False if missing. Two calls.

        DEFAULT_TIMEOUT is the cache's TIMEOUT (in seconds); None: never expires.
        """
        return self._set_expiry("pexpire", key, self._expires(_from_ms(timeout)), version)

    def expire_at(self, key: Any, when: When, version: int | None = None) -> bool:
        """Make a live key expire at ``when`` (a datetime, or Unix time in seconds); a moment past deletes
        it. Return False if the key is missing. Two calls."""
        return self._set_expiry("expire_at", key, _moment(when, 1), version)

    def pexpire_at(self, key: Any, when: When, version: int | None = None) -> bool:
        """Make a live key expire at ``when`` (a datetime, or Unix time in milliseconds); a moment past
        deletes it. Return False if the key is missing. Two calls."""
        return self._set_expiry("pexpire_at", key, _moment(when, 1000), version)

    def persist(self, key: Any, version: int | None = None) -> bool:
        """Make a live key never expire; return False if missing. Two calls."""
        return self._set_expiry("persist", key, None, version)

    # Keys by glob pattern

    def iter_keys(self, pattern: str, itersize: int | None = None, version: int | None = None) -> Iterator[str]:
        """Yield the user keys matching the glob ``pattern`` (KEY_PREFIX and VERSION applied).

        Lists by the pattern's longest literal prefix, reading metadata only
        (never values): one list call per ``itersize`` listed keys. ``itersize``
        is a hint, as for Redis' SCAN: default 1000, held to the 10..1000 keys a
        KV listing takes.
        Under IGNORE_EXCEPTIONS a failure is logged and ends the iteration.
        """
        keys = self._user_keys(pattern, itersize, version)
        while (key := self._guard("iter_keys", None, next, keys, None)) is not None:
            yield key

    def keys(self, pattern: str, version: int | None = None) -> list[str]:
        """Return the list of user keys matching ``pattern``; see iter_keys for the cost.

        Under IGNORE_EXCEPTIONS a failure is logged and [] returned.
        """
        return self._guard("keys", [], list, self._user_keys(pattern, None, version))

    def delete_pattern(self, pattern: str, itersize: int | None = None, version: int | None = None) -> int:
        """Delete the keys matching ``pattern``; return how many.

        Calls: one list per ``itersize`` listed keys, one bulk delete per 10,000 matches.
        Under IGNORE_EXCEPTIONS a failure is logged and 0 returned.
        """
        return self._guard("delete_pattern", 0, run, self._delete_pattern(pattern, itersize, version), self._entries)

    def _user_keys(self, pattern: str, itersize: int | None, version: int | None) -> Iterator[str]:
        compiled = patterns.compile_pattern(self, self._kv_prefix, pattern, version)
        yield from patterns.user_keys(self._entries.kv, compiled, itersize)

    async def _auser_keys(self, pattern: str, itersize: int | None, version: int | None) -> AsyncIterator[str]:
        compiled = patterns.compile_pattern(self, self._kv_prefix, pattern, version)
        async for key in patterns.auser_keys(await self._entries.akv(), compiled, itersize):
            yield key

    def _delete_pattern(self, pattern: str, itersize: int | None, version: int | None) -> Plan[int]:
        compiled = patterns.compile_pattern(self, self._kv_prefix, pattern, version)
        now = clock.now()
        return delete_listed(compiled.literal or None, patterns.page_size(itersize),
                             lambda page: patterns.matches(page, compiled, now))

    # The async twins: the same answers, calls and IGNORE_EXCEPTIONS, each KV call awaited.

    async def attl(self, key: Any, version: int | None = None) -> int | None:
        return _whole_seconds(await self._aleft("ttl", key, version))

    async def apttl(self, key: Any, version: int | None = None) -> int | None:
        return _milliseconds(await self._aleft("pttl", key, version))

    async def aexpire(self, key: Any, timeout: Any, version: int | None = None) -> bool:
        return await self._aset_expiry("expire", key, self._expires(timeout), version)

    async def apexpire(self, key: Any, timeout: Any, version: int | None = None) -> bool:
        return await self._aset_expiry("pexpire", key, self._expires(_from_ms(timeout)), version)

    async def aexpire_at(self, key: Any, when: When, version: int | None = None) -> bool:
        return await self._aset_expiry("expire_at", key, _moment(when, 1), version)

    async def apexpire_at(self, key: Any, when: When, version: int | None = None) -> bool:
        return await self._aset_expiry("pexpire_at", key, _moment(when, 1000), version)

    async def apersist(self, key: Any, version: int | None = None) -> bool:
        return await self._aset_expiry("persist", key, None, version)

    async def aiter_keys(self, pattern: str, itersize: int | None = None,
                         version: int | None = None) -> AsyncIterator[str]:
        """The async iterator of :meth:`iter_keys` (``async for``): one awaited list call per page."""
        keys = self._auser_keys(pattern, itersize, version)
        while (key := await self._guard.acall("iter_keys", None, anext, keys, None)) is not None:
            yield key

    async def akeys(self, pattern: str, version: int | None = None) -> list[str]:
        return await self._guard.acall("keys", [], _alist, self._auser_keys(pattern, None, version))

    async def adelete_pattern(self, pattern: str, itersize: int | None = None, version: int | None = None) -> int:
        return await self._guard.acall("delete_pattern", 0, arun, self._delete_pattern(pattern, itersize, version),
                                       self._entries)

    # Refused

    def lock(self, *args: Any, **kwargs: Any) -> Any:
        """Refuse: Workers KV has no compare-and-set, so no lock built on it is safe."""
        raise NotImplementedError(
            "CloudflareKVCache cannot provide lock(): Workers KV has no atomic compare-and-set, "
            "allows one write per key per second and is eventually consistent, so two processes "
            "could both believe they hold the lock. Use a database lock (select_for_update), "
            "a Cloudflare Durable Object, or Redis for mutual exclusion."
        )


def _left(meta: Any) -> float | None:
    """Return the seconds a key with metadata ``meta`` has left (0 if missing or expired), None if it never
    expires."""
    if not isinstance(meta, dict):
        return 0
    expires = metadata.read(meta).expires
    return None if expires is None else max(0.0, expires - clock.now())


def _whole_seconds(left: float | None) -> int | None:
    return None if left is None else math.ceil(left)


def _milliseconds(left: float | None) -> int | None:
    return None if left is None else math.ceil(round(left * 1000, 3))


def _from_ms(timeout: Any) -> Any:
    """Return a pexpire timeout in seconds (DEFAULT_TIMEOUT and None as they are)."""
    return timeout if timeout is DEFAULT_TIMEOUT or timeout is None else timeout / 1000


async def _alist(keys: AsyncIterator[str]) -> list[str]:
    return [key async for key in keys]


def _moment(when: When, per_second: int) -> float:
    """Return ``when`` (a datetime, or a Unix time in 1/``per_second`` s) in epoch seconds."""
    if isinstance(when, datetime.datetime):
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        unit = "seconds" if per_second == 1 else "milliseconds"
        raise TypeError(f"Expected a datetime or a Unix time in {unit}; got {type(when).__name__}.")
    return when / per_second
