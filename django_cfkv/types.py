"""Small value types returned by both KV implementations."""

from typing import Any, NamedTuple


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


class Paging:
    """``iter_keys`` for any class with ``list_keys``: one definition of cursor paging."""

    def iter_keys(self, prefix=None):
        """Yield KeyInfo for every key with ``prefix``, one ``list_keys`` page (1000 keys) at a time."""
        cursor = None
        while True:
            page = self.list_keys(prefix=prefix, cursor=cursor)
            yield from page.keys
            if not page.cursor:
                return
            cursor = page.cursor
