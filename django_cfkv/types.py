"""Small value types returned by both KV implementations, and the one loop over list pages."""

from typing import Any, NamedTuple

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

    keys: list
    cursor: str | None


def iter_pages(kv, prefix=None, limit=1000):
    """Yield every KeyPage of a listing, following cursors; the only loop over pages.

    A listing that cannot end raises KVMalformedResponseError (a KVAPIError) instead of looping forever: a
    cursor seen twice (a server going round in circles), a page with exactly
    the keys of the page before it, or MAX_EMPTY_PAGES empty pages in a row.
    """
    cursor, seen, previous, empty = None, set(), None, 0
    while True:
        page = kv.list_keys(prefix=prefix, limit=limit, cursor=cursor)
        names = [info.name for info in page.keys]
        empty = 0 if names else empty + 1
        if page.cursor and (page.cursor in seen or (names and names == previous) or empty >= MAX_EMPTY_PAGES):
            raise KVMalformedResponseError(
                "Workers KV's key listing does not move on (it repeats a cursor or a page), so it was "
                "stopped rather than followed forever. Check BASE_URL: it should be Cloudflare's API "
                "or the django-cfkv gateway.")
        yield page
        if not page.cursor:
            return
        seen.add(page.cursor)
        cursor, previous = page.cursor, names


class Paging:
    """``iter_keys`` for any class with ``list_keys``."""

    def iter_keys(self, prefix=None):
        """Yield KeyInfo for every key with ``prefix``, one ``list_keys`` page (1000 keys) at a time."""
        for page in iter_pages(self, prefix):
            yield from page.keys
