"""The KV interface, the small value types both implementations return, and the one loop over list pages."""

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

from .exceptions import KVMalformedResponseError

# Cloudflare may answer a page with no keys and a cursor (keys expired or
# deleted since it was cut). A run this long of them (a million dead keys in a
# row at 1,000 per page) is a server that makes no progress.
MAX_EMPTY_PAGES = 1000


class ValueWithMetadata(NamedTuple):
    """A value read together with its metadata and absolute expiry (epoch seconds or None)."""

    value: bytes
    metadata: Any
    expiration: int | None


class KeyInfo(NamedTuple):
    """One key in a listing: its name, absolute expiry (or None) and metadata (or None)."""

    name: str
    expiration: int | None = None
    metadata: Any = None


class KeyPage(NamedTuple):
    """One page of a listing; ``cursor`` is None on the last page."""

    keys: list[KeyInfo]
    cursor: str | None


class Lister(Protocol):
    """Anything with KV's one-page listing."""

    def list_keys(self, prefix: str | None = None, limit: int = 1000, cursor: str | None = None) -> KeyPage: ...


class AsyncLister(Protocol):
    """Anything with KV's one-page listing, awaited."""

    async def alist_keys(self, prefix: str | None = None, limit: int = 1000, cursor: str | None = None
                         ) -> KeyPage: ...


class SyncKV(Lister, Protocol):
    """The KV interface's blocking methods."""

    def get(self, key: str) -> bytes | None:
        """Return the value's bytes, or None when the key is missing."""
        ...

    def get_with_metadata(self, key: str) -> "ValueWithMetadata | None":
        """Return the value with its metadata and KV expiry, or None when missing."""
        ...

    def get_metadata(self, key: str) -> Any:
        """Return the key's metadata (None when it has none or is missing)."""
        ...

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return {key: bytes} for the keys that exist (text values only, as KV's bulk read)."""
        ...

    def put(self, key: str, value: bytes | str, *, expiration: float | None = None,
            expiration_ttl: float | None = None, metadata: Any = None) -> None:
        """Write one value, replacing its value, expiry and metadata."""
        ...

    def put_many(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Write many items (``key``, ``value``, optional ``expiration``, ``expiration_ttl``, ``metadata``)."""
        ...

    def delete(self, key: str) -> None:
        """Delete one key; a missing key is not an error."""
        ...

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete many keys."""
        ...

    def iter_keys(self, prefix: str | None = None) -> Iterator[KeyInfo]:
        """Yield every key with ``prefix``, page by page."""
        ...


class AsyncKV(AsyncLister, Protocol):
    """The KV interface's async twins: each awaits what its blocking namesake returns, and raises what it raises."""

    async def aget(self, key: str) -> bytes | None: ...

    async def aget_with_metadata(self, key: str) -> "ValueWithMetadata | None": ...

    async def aget_metadata(self, key: str) -> Any: ...

    async def aget_many(self, keys: Iterable[str]) -> dict[str, bytes]: ...

    async def aput(self, key: str, value: bytes | str, *, expiration: float | None = None,
                   expiration_ttl: float | None = None, metadata: Any = None) -> None: ...

    async def aput_many(self, items: Iterable[Mapping[str, Any]]) -> None: ...

    async def adelete(self, key: str) -> None: ...

    async def adelete_many(self, keys: Iterable[str]) -> None: ...

    def aiter_keys(self, prefix: str | None = None) -> AsyncIterator[KeyInfo]:
        """Yield every key with ``prefix``, page by page (``async for``)."""
        ...


class KV(SyncKV, AsyncKV, Protocol):
    """The KV interface: one Workers KV namespace, as KVClient (REST) and LocalKV (SQLite) give it.

    Every blocking method has an async twin named with an ``a`` in front, as Django's cache
    has (``get`` and ``aget``, ``iter_keys`` and ``aiter_keys``). Every method checks its
    input against KV's limits before any I/O (KVValueError) and raises a KVError when the
    namespace cannot be used.
    """


class PageWalk:
    """Where a listing is, page by page, and the check that it moves on.

    A listing that cannot end raises KVMalformedResponseError (a KVAPIError) instead of looping
    forever: a cursor seen twice (a server going round in circles), a page with exactly the
    keys of the page before it, or MAX_EMPTY_PAGES empty pages in a row.
    """

    def __init__(self) -> None:
        self.cursor: str | None = None  # the next page's; None before the first
        self.done = False
        self._seen: set[str] = set()
        self._previous: list[str] | None = None
        self._empty = 0

    def step(self, page: KeyPage) -> KeyPage:
        """Take the page just listed; return it, or raise if the listing does not move on."""
        names = [info.name for info in page.keys]
        self._empty = 0 if names else self._empty + 1
        if page.cursor and (page.cursor in self._seen or (names and names == self._previous)
                            or self._empty >= MAX_EMPTY_PAGES):
            raise KVMalformedResponseError(
                "Workers KV's key listing does not move on (it repeats a cursor or a page), so it was "
                "stopped rather than followed forever. Check BASE_URL: it should be Cloudflare's API "
                "or the django-cfkv gateway.")
        self.done = not page.cursor
        if page.cursor:
            self._seen.add(page.cursor)
        self.cursor, self._previous = page.cursor, names
        return page


def iter_pages(kv: Lister, prefix: str | None = None, limit: int = 1000) -> Iterator[KeyPage]:
    """Yield every KeyPage of a listing, following cursors; one of the two loops over pages
    (``aiter_pages`` is the other, for awaited listings), both checked by one ``PageWalk``."""
    walk = PageWalk()
    while not walk.done:
        yield walk.step(kv.list_keys(prefix=prefix, limit=limit, cursor=walk.cursor))


async def aiter_pages(kv: AsyncLister, prefix: str | None = None, limit: int = 1000) -> AsyncIterator[KeyPage]:
    """Yield every KeyPage of a listing, awaiting each page (see :func:`iter_pages`)."""
    walk = PageWalk()
    while not walk.done:
        yield walk.step(await kv.alist_keys(prefix=prefix, limit=limit, cursor=walk.cursor))


class Paging:
    """``iter_keys`` and ``aiter_keys`` for any class with ``list_keys`` and ``alist_keys``."""

    def iter_keys(self: Lister, prefix: str | None = None) -> Iterator[KeyInfo]:
        """Yield KeyInfo for every key with ``prefix``, one ``list_keys`` page (1000 keys) at a time."""
        for page in iter_pages(self, prefix):
            yield from page.keys

    async def aiter_keys(self: AsyncLister, prefix: str | None = None) -> AsyncIterator[KeyInfo]:
        """Yield KeyInfo for every key with ``prefix`` (``async for``), one awaited page at a time."""
        async for page in aiter_pages(self, prefix):
            for info in page.keys:
                yield info
