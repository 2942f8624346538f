"""What a stored value carries beside it, and the KV TTL of an exact expiry.

Every value django-cfkv writes carries KV metadata
``{"kind": "cache" | "session" | "ratelimit", "expires": <exact expiry, epoch s>, ...}``,
and ``"size"`` (bytes of the value) where the writer records it, so that
``manage.py cfkv`` tells kinds apart, sweeps and totals sizes from listings
alone, without reading values. :func:`build` writes it, :func:`read` reads it
(whoever wrote it: a Worker or a person may write anything), and
:func:`kv_ttl` is the TTL KV gets for an exact expiry.

Nothing here knows Django.
"""

import math
from typing import Any, NamedTuple

from .limits import MIN_TTL, is_finite_number

CACHE, SESSION, RATELIMIT = "cache", "session", "ratelimit"
KINDS = (CACHE, SESSION, RATELIMIT)


def exact(expires: float | None) -> float | None:
    """Return an exact expiry as metadata stores it: cut to milliseconds, rounding down.

    Down, not to the nearest: the values carry their own expiry cut the same
    way (a cache entry's ``expires``, a session's ``expiresAt`` in whole ms),
    so the metadata never calls a value live after the value says it expired,
    and a ttl() read from it never exceeds the timeout given. Whole seconds
    (a limiter window's end) are kept as they are.
    """
    if expires is None or isinstance(expires, int):
        return expires
    return math.floor(expires * 1000) / 1000


def kv_ttl(expires: float, now: float) -> int:
    """Return the ``expiration_ttl`` to give KV for the exact expiry ``expires``.

    Whole seconds rounded up, never below KV's minimum of 60. Up, because
    KV's TTL only cleans up and must not remove a value before its exact
    expiry (readers check that one, so a value KV keeps longer is still a
    miss); rounding down or to the nearest would cut up to a second off.
    """
    return max(MIN_TTL, math.ceil(expires - now))


def build(kind: str, *, expires: float | None = None, size: int | None = None, **extra: Any) -> dict[str, Any]:
    """Return the metadata of a value of ``kind``: exact expiry (if any), ``extra`` fields, then size (if known)."""
    meta: dict[str, Any] = {"kind": kind}
    if expires is not None:
        meta["expires"] = exact(expires)
    meta.update(extra)
    if size is not None:
        meta["size"] = size
    return meta


class Metadata(NamedTuple):
    """What a value's metadata says; each field None where it is absent or not of its type."""

    kind: str | None
    expires: float | None
    size: int | None
    fields: dict[str, Any]  # the whole object, for a kind's own fields (a limiter shard's count)

    def is_live(self, now: float) -> bool:
        """Return True unless the metadata names an exact expiry at or before ``now``."""
        return self.expires is None or self.expires > now


def read(metadata: object) -> Metadata:
    """Return what ``metadata`` (as a read or a listing gave it, whoever wrote it) says."""
    if not isinstance(metadata, dict):
        return Metadata(None, None, None, {})
    kind, expires, size = metadata.get("kind"), metadata.get("expires"), metadata.get("size")
    return Metadata(
        kind if isinstance(kind, str) else None,
        float(expires) if is_finite_number(expires) else None,
        size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        metadata,
    )
