"""What a listed entry is: its kind, its exact expiry, the name fit to show; and listing them."""

from collections.abc import Callable
from typing import Any

from .. import clock, conf, limits
from ..metadata import CACHE, RATELIMIT, SESSION
from ..metadata import read as read_metadata
from ..types import KV, KeyInfo, iter_pages

KINDS = ("sessions", "cache", "ratelimit", "other")
SWEEP_KINDS = ("sessions", "cache", "ratelimit")
_METADATA_KINDS = {SESSION: "sessions", CACHE: "cache", RATELIMIT: "ratelimit"}
RATELIMIT_PREFIX = "rl:"
EXPIRY_BUCKETS = ("expired", "lt_1h", "lt_1d", "lt_7d", "later", "never")
_BUCKET_LIMITS = (("lt_1h", 3600), ("lt_1d", 86400), ("lt_7d", 7 * 86400))


def kind_of(name: str, metadata: Any = None) -> str:
    """Return the kind of an entry: "sessions", "cache", "ratelimit" or "other"."""
    kind = read_metadata(metadata).kind
    if kind in _METADATA_KINDS:
        return _METADATA_KINDS[kind]
    if name.startswith(conf.setting("SESSION_CFKV_KEY_PREFIX") or "session:"):
        return "sessions"
    if name.startswith(RATELIMIT_PREFIX):
        return "ratelimit"
    return "other"


def display_key(name: str, metadata: Any = None) -> str:
    """Return ``name`` fit to show: a session key that holds a usable id (the plain layout) is cut short.

    ``session:k3x9w2m8...`` becomes ``session:k3x9…``: enough to tell keys
    apart, too little to use as a cookie or a bearer token. Hashed session
    keys, which no one can use, are shown whole.
    """
    if kind_of(name, metadata) != "sessions":
        return name
    from ..sessions import is_valid_key

    prefix = conf.setting("SESSION_CFKV_KEY_PREFIX")
    tail = name[len(prefix):] if prefix and name.startswith(prefix) else name.rpartition(":")[2]
    if not is_valid_key(tail, "json"):  # neither a Django session key nor a Worker's UUID
        return name
    return name[:len(name) - len(tail)] + tail[:4] + "…"


def exact_expiry(info: KeyInfo) -> float | None:
    """Return an entry's exact expiry (epoch seconds): metadata "expires", else KV's, else None."""
    expires = read_metadata(info.metadata).expires
    if expires is not None:
        return expires
    return None if info.expiration is None else float(info.expiration)


def expiry_bucket(expires: float | None, now: float) -> str:
    """Return the EXPIRY_BUCKETS name for an exact expiry."""
    if expires is None:
        return "never"
    left = expires - now
    if left <= 0:
        return "expired"
    for bucket, limit in _BUCKET_LIMITS:
        if left < limit:
            return bucket
    return "later"


def describe(info: KeyInfo, now: float | None = None) -> dict[str, Any]:
    """Return one listed key as a JSON-ready dict (the ``ls --json`` item)."""
    now = clock.now() if now is None else now
    expires = exact_expiry(info)
    return {
        "key": display_key(info.name, info.metadata),
        "kind": kind_of(info.name, info.metadata),
        "expires": expires,
        "expired": expires is not None and expires <= now,
        "kv_expiration": info.expiration,
        "metadata": info.metadata,
    }


def list_entries(kv: KV, prefix: str | None = None, limit: int | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[list[KeyInfo], bool]:
    """Return up to ``limit`` KeyInfo (all when None) and whether more were left.

    Costs ceil(returned/1000) list calls.
    """
    found: list[KeyInfo] = []
    cursor = None
    size = limits.LIST_MAX_LIMIT if limit is None else max(limits.LIST_MIN_LIMIT, min(limits.LIST_MAX_LIMIT, limit))
    for page in iter_pages(kv, prefix, size):
        found += page.keys
        if progress:
            progress(len(found))
        cursor = page.cursor
        if limit is not None and len(found) >= limit:
            break
    more = bool(cursor) or (limit is not None and len(found) > limit)
    return found[:limit] if limit is not None else found, more
