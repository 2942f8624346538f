"""Django's async cache API on CloudflareKVCache (aget, aset...), each method its blocking namesake's twin.

Each awaits the KV object's async twins (on the event loop with the async extra), with the same calls,
IGNORE_EXCEPTIONS, near cache and stampede protection as its blocking namesake. Read-modify-writes (add,
touch, incr, set with nx or xx) and clear() follow the same plan as their namesake (:mod:`.base`), its
calls awaited; a read-modify-write holds its key's asyncio lock instead of the threading one, which a
coroutine may not hold across an await.
"""

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from ..exceptions import KVAPIError, KVError, KVValueError
from .base import CacheBase, only_nx
from .entries import akey_lock, bulk_refused
from .plans import arun

_MISSING = object()


class AsyncCacheAPI(CacheBase):
    """Django's async cache methods, and ``@cached``'s awaited get-or-compute."""

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        entry = await self._guard.acall("get", None, self._entries.aread, self.kv_key(key, version))
        return default if entry is None else entry.value

    async def aset(  # type: ignore[override]  # as set()
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, *,
        nx: bool = False, xx: bool = False,
    ) -> bool | None:
        if only_nx(nx, xx):
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
        async def acompute() -> Any:
            return default() if callable(default) else default  # called on the loop, as Django's aget_or_set does

        return await self._aget_or_compute(key, acompute, timeout, version, protect=callable(default))

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

    async def _aget_or_compute(self, key: Any, acompute: Callable[[], Awaitable[Any]], timeout: Any,
                               version: int | None, protect: bool = True) -> Any:
        """Return the cached value, or await ``acompute()``, store and return it, guarded as get_or_set (also
        ``@cached`` on a coroutine function: get_or_set takes only a plain callable). ``protect``: with the
        cache's stampede protection, if it has one."""
        kv_key = self.kv_key(key, version)
        entry = await self._guard.acall("get_or_set", None, self._entries.aread, kv_key)
        if self._stampede is not None and protect:
            return await self._stampede.aget_or_compute(kv_key, entry, acompute,
                                                        self._astore_computed(key, kv_key, timeout))
        if entry is not None:
            return entry.value
        value = await acompute()
        await self._guard.acall("get_or_set", None, self._entries.astore, kv_key, value, self._expires(timeout),
                                None, key)
        return value


async def aget_or_compute(cache: Any, key: Any, acompute: Callable[[], Awaitable[Any]], timeout: Any,
                          version: int | None) -> Any:
    """Any Django cache's value, or ``await acompute()`` stored and returned: what Django's get_or_set does,
    for a coroutine (``@cached`` on ``async def``, on a cache without stampede protection)."""
    value = await cache.aget(key, _MISSING, version=version)
    if value is _MISSING:
        value = await acompute()
        await cache.aset(key, value, timeout, version=version)
    return value
