"""KVClient's async twins: ``aget``, ``aput``, ``aiter_keys``... each awaits the plan its blocking
namesake follows (:mod:`.plans`), through :meth:`Transport.arun <django_cfkv.transport.Transport.arun>`.

With the ``async`` extra (aiohttp) the calls are made on the running event loop, with no
thread; without it each runs the blocking client in a worker thread. Either way a twin
raises what its namesake raises, counts its calls in the same counters, and obeys the same
retry policy, deadline and quota: they are the same steps.
"""

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from ..transport.sync import Transport
from ..types import KeyPage, ValueWithMetadata
from . import plans
from .plans import Call, Plan


class AsyncMethods:
    """The awaited half of :class:`~django_cfkv.client.KVClient` (``aiter_keys`` is ``Paging``'s)."""

    transport: Transport
    _url: str
    _account_url: str

    def _arun(self, operation: Plan[Any] | Call) -> Awaitable[Any]:
        # Awaited by the caller: no coroutine of its own.
        return self.transport.arun(*plans.steps(operation, self.transport, self._url, self._account_url))

    async def aclose(self) -> None:
        """Close the running event loop's pooled connections (they are closed when the loop ends anyway)."""
        await self.transport.aclose()

    async def aget(self, key: str) -> bytes | None:
        """Return the value's bytes, or None when the key does not exist. One call."""
        return await self._arun(plans.get(key))

    async def aget_with_metadata(self, key: str) -> ValueWithMetadata | None:
        """Return ValueWithMetadata, or None when missing. Two calls; one when missing."""
        return await self._arun(plans.get_with_metadata(key))

    async def aget_metadata(self, key: str) -> Any:
        """Return the key's metadata (None when it has none or is missing). One call."""
        return await self._arun(plans.get_metadata(key))

    async def aget_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return {key: bytes} for the keys that exist, in ceil(n/100) bulk calls (UTF-8 values only)."""
        return await self._arun(plans.get_many(list(keys)))  # read here, not in a worker thread

    async def alist_keys(self, prefix: str | None = None, limit: int = 1000, cursor: str | None = None) -> KeyPage:
        """Return one KeyPage (up to ``limit`` keys, 10..1000); cursor None on the last page."""
        return await self._arun(plans.list_keys(prefix, limit, cursor))

    async def aput(self, key: str, value: bytes | str, *, expiration: float | None = None,
                   expiration_ttl: float | None = None, metadata: Any = None) -> None:
        """Write one value. One call."""
        await self._arun(plans.put(key, value, expiration=expiration, expiration_ttl=expiration_ttl,
                                   metadata=metadata))

    async def aput_many(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Write many items, one bulk call per 10,000 pairs or 100 MB; KVBulkError names every key not written."""
        await self._arun(plans.put_many(list(items)))  # as aget_many

    async def adelete(self, key: str) -> None:
        """Delete one key; deleting a missing key is not an error. One call."""
        await self._arun(plans.delete(key))

    async def adelete_many(self, keys: Iterable[str]) -> None:
        """Delete keys in one bulk call per 10,000; KVBulkError names any left behind."""
        await self._arun(plans.delete_many(list(keys)))  # as aget_many

    async def alist_namespaces(self) -> list[dict[str, Any]]:
        """Return every namespace of the account as [{"id", "title", ...}]."""
        return await self._arun(plans.list_namespaces())

    async def acreate_namespace(self, title: str) -> dict[str, Any]:
        """Create a namespace; return it as {"id", "title"}. Not retried (not idempotent)."""
        return await self._arun(plans.create_namespace(title))
