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
