"""Strict mode: CacheCounter counts exactly with a Django cache's atomic ``add`` and ``incr`` (Redis,
Memcached), for limits that must not be exceeded across processes."""

import math
from collections.abc import Generator
from typing import Any

from ..plans import afollow, follow
from .shards import TTL_MARGIN, shard_prefix, window


class CacheCounter:
    """Strict mode: count exactly with a Django cache's atomic ``add`` and ``incr`` (Redis, Memcached)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def hit(self, policy: str, client: str, limit: int, period: int, now: float,
            increment: bool = True) -> tuple[int, int, bool]:
        """Count one request (or only look, without ``increment``); return ``(count in window, window end,
        True)``."""
        return follow(_cache_count(policy, client, period, now, increment),
                      lambda call: getattr(self.cache, call[0])(*call[1]), ValueError)

    async def ahit(self, policy: str, client: str, limit: int, period: int, now: float,
                   increment: bool = True) -> tuple[int, int, bool]:
        """The async twin of :meth:`hit`: the same calls, each the cache's async method (``aadd``, ``aincr``)."""
        return await afollow(_cache_count(policy, client, period, now, increment),
                             lambda call: getattr(self.cache, "a" + call[0])(*call[1]), ValueError)


def _cache_count(policy: str, client: str, period: int, now: float,
                 increment: bool) -> Generator[tuple[str, tuple[Any, ...]], Any, tuple[int, int, bool]]:
    """CacheCounter's counting as a plan: yields (cache method, arguments), is sent each answer."""
    index, _, end = window(now, period)
    key = shard_prefix(policy, client, period, index)[:-1]
    timeout = math.ceil(end - now) + TTL_MARGIN
    if not increment:
        return int((yield "get", (key, 0)) or 0), end, True
    if (yield "add", (key, 1, timeout)):
        return 1, end, True
    try:
        return (yield "incr", (key,)), end, True
    except ValueError:  # expired between add and incr
        yield "add", (key, 1, timeout)
        return 1, end, True
