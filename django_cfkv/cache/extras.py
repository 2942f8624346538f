"""django-redis' extra cache methods, with django-redis' names and meanings, on CloudflareKVCache.

One method per name. Each is built on the backend's own parts, named below:
``kv_key()`` and ``touch()``, the IGNORE_EXCEPTIONS guard, the cache's entries,
and the glob patterns of :mod:`.patterns`. Where KV cannot keep django-redis'
promise (``lock()``), the method refuses and says why.
"""

import math
from collections.abc import Iterator
from typing import Any

from django.core.cache.backends.base import BaseCache

from .. import clock, metadata
from . import patterns
from .entries import Entries
from .failures import Guard


class DjangoRedisExtras(BaseCache):
    """django-redis' extras: ttl, expire, persist, keys, iter_keys, delete_pattern, lock."""

    # Set by CloudflareKVCache.__init__.
    _guard: Guard
    _entries: Entries
    _kv_prefix: str

    def kv_key(self, key: Any, version: int | None = None) -> str:
        raise NotImplementedError("subclasses of DjangoRedisExtras must provide a kv_key() method")

    # Expiry

    def ttl(self, key: Any, version: int | None = None) -> int | None:
        """Return whole seconds left (rounded up), None if it never expires, 0 if missing. One call.

        Under IGNORE_EXCEPTIONS a failure is logged and 0 returned (as for a missing key).
        """
        meta = self._guard("ttl", None, self._entries.kv.get_metadata, self.kv_key(key, version))
        if not isinstance(meta, dict):
            return 0
        expires = metadata.read(meta).expires
        return None if expires is None else max(0, math.ceil(expires - clock.now()))

    def expire(self, key: Any, timeout: float | None, version: int | None = None) -> bool:
        """Set a new timeout on a live key; return False if missing. Two calls."""
        return self.touch(key, timeout, version=version)

    def persist(self, key: Any, version: int | None = None) -> bool:
        """Make a live key never expire; return False if missing. Two calls."""
        return self.touch(key, None, version=version)

    # Keys by glob pattern

    def iter_keys(self, pattern: str, itersize: int | None = None, version: int | None = None) -> Iterator[str]:
        """Yield the user keys matching the glob ``pattern`` (KEY_PREFIX and VERSION applied).

        Lists by the pattern's longest literal prefix, reading metadata only
        (never values): one list call per ``itersize`` (default 1000) listed keys.
        Under IGNORE_EXCEPTIONS a failure is logged and ends the iteration.
        """
        keys = self._user_keys(pattern, itersize, version)
        while (key := self._guard("iter_keys", None, next, keys, None)) is not None:
            yield key

    def keys(self, pattern: str, version: int | None = None) -> list[str]:
        """Return the list of user keys matching ``pattern``; see iter_keys for the cost.

        Under IGNORE_EXCEPTIONS a failure is logged and [] returned.
        """
        return self._guard("keys", [], list, self._user_keys(pattern, None, version))

    def delete_pattern(self, pattern: str, itersize: int | None = None, version: int | None = None) -> int:
        """Delete the keys matching ``pattern``; return how many.

        Calls: one list per ``itersize`` listed keys, one bulk delete per 10,000 matches.
        Under IGNORE_EXCEPTIONS a failure is logged and 0 returned.
        """
        return self._guard("delete_pattern", 0, self._delete_pattern, pattern, itersize, version)

    def _user_keys(self, pattern: str, itersize: int | None, version: int | None) -> Iterator[str]:
        compiled = patterns.compile_pattern(self, self._kv_prefix, pattern, version)
        yield from patterns.user_keys(self._entries.kv, compiled, itersize)

    def _delete_pattern(self, pattern: str, itersize: int | None, version: int | None) -> int:
        compiled = patterns.compile_pattern(self, self._kv_prefix, pattern, version)
        return self._entries.delete_streamed(patterns.matching(self._entries.kv, compiled, itersize))

    # Refused

    def lock(self, *args: Any, **kwargs: Any) -> Any:
        """Refuse: Workers KV has no compare-and-set, so no lock built on it is safe."""
        raise NotImplementedError(
            "CloudflareKVCache cannot provide lock(): Workers KV has no atomic compare-and-set, "
            "allows one write per key per second and is eventually consistent, so two processes "
            "could both believe they hold the lock. Use a database lock (select_for_update), "
            "a Cloudflare Durable Object, or Redis for mutual exclusion."
        )
