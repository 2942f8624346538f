"""Windows and shards: which window a moment falls in, the KV key that counts it, and what that key holds.

Windows are fixed and aligned to the epoch, so every process computes the
same one from the clock alone. A shard is one process's count for one
(policy, client, window), written under
``rl:<policy>:<client>:<period>:<window>:<process>.<n>`` with the count in its
value and in its metadata (so a listing gives every count without a read).
Strict mode's cache key is the same name without ``:<process>.<n>``.
"""

from typing import Any

from .. import clock
from ..limits import parse_digits
from ..metadata import RATELIMIT, kv_ttl
from ..metadata import build as build_metadata
from ..metadata import read as read_metadata

SHARD_PREFIX = "rl:"
TTL_MARGIN = 10  # seconds a shard outlives its window, so late readers still find it


def window(now: float, period: int) -> tuple[int, int, int]:
    """Return ``(index, start, end)`` of the fixed window of ``period`` seconds holding ``now``."""
    index = int(now // period)
    return index, index * period, (index + 1) * period


def shard_prefix(policy: str, client: str, period: int, index: int) -> str:
    """Return the key prefix shared by every process's shard of one (policy, client, window)."""
    return f"{SHARD_PREFIX}{policy}:{client}:{period}:{index}:"


def shard_item(key: str, count: int, end: int, limit: int, now: float) -> dict[str, Any]:
    """Return the ``put_many`` item writing ``count`` to the shard ``key`` of a window ending at ``end``."""
    value = str(count)
    return {"key": key, "value": value, "expiration_ttl": kv_ttl(end + TTL_MARGIN, now),
            "metadata": build_metadata(RATELIMIT, expires=end, count=count, limit=limit, size=len(value))}


def shard_count(metadata: object) -> int:
    """Return the count a shard's metadata holds (0 for anything that is not a positive whole number)."""
    count = read_metadata(metadata).fields.get("count")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def describe_shard(name: str, metadata: object = None, value: Any = None) -> dict[str, Any] | None:
    """Return what a limiter key holds, from its name and metadata (or value), or None if it is not one.

    The dict has ``policy``, ``client`` (hash), ``period``, ``window`` (index),
    ``window_start``, ``window_end`` (epoch seconds), ``process`` (None for a
    strict-mode cache key), ``count`` (None if unknown), ``limit`` and
    ``expired`` (whether the window is over).
    """
    if not name.startswith(SHARD_PREFIX):
        return None
    parts = name[len(SHARD_PREFIX):].rsplit(":", 4)
    process = parts.pop() if len(parts) == 5 else None  # None: a strict-mode cache key
    if len(parts) != 4:
        return None
    # The period and window index are numbers in a name anyone who writes the namespace may choose: at most
    # 12 digits (an index of seconds is 10 digits until the year 2286).
    policy, client, period, index = parts[0], parts[1], parse_digits(parts[2], 12), parse_digits(parts[3], 12)
    if period is None or index is None or period < 1:
        return None
    meta = read_metadata(metadata).fields
    count = meta.get("count")
    if count is None and value is not None:
        try:
            count = int(value.decode() if isinstance(value, bytes) else value)
        except (TypeError, ValueError):
            count = None
    _, start, end = window(index * period, period)
    return {"policy": policy, "client": client, "period": period, "window": index, "window_start": start,
            "window_end": end, "process": process, "count": count, "limit": meta.get("limit"),
            "expired": end <= clock.now()}
