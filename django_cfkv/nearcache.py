"""A per-process near cache: recent KV reads kept in memory for a few seconds.

Every KV read through the REST API is a round trip (tens of milliseconds from
most servers) and a call from the account's budget. A near cache answers
repeated reads of the same key from this process's memory instead, for at
most ``timeout`` seconds after the value was read from KV.

What it promises, and what it does not:

* Bounded: at most ``max_entries`` entries and ``max_bytes`` bytes of values
  (least recently used go first), each kept at most ``timeout`` seconds.
* This process's own writes and deletes invalidate at once, so this
  process reads its own writes (a read racing with a write is not kept).
  A write that got no answer (it failed, timed out, or its caller was
  cancelled) may still land: no read of its keys is kept for
  :data:`UNSETTLED_SECONDS` after it.
* Other processes' writes are seen only once the entry ages out: a near
  cache adds up to ``timeout`` seconds of staleness on top of KV's own (reads
  at other Cloudflare locations may already be ~60 s stale).
* Process-wide and thread-safe: Django gives each thread its own cache
  object, so near caches live in a registry here, one per key space.
* Fork-safe: a child process starts with every near cache empty.

Values are kept as the raw bytes read from KV (``None`` for a missing key),
so callers decode a fresh copy on every hit and still check exact expiry.
"""

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any

from . import clock, conf

__all__ = ["MISSING", "NearCache", "NearKV", "near_cache", "reset"]

#: Returned by NearCache.get() when the near cache cannot answer.
MISSING = object()

DEFAULT_MAX_ENTRIES = 1000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: Seconds after a write that got no answer during which no read of its keys is kept: KV may still apply it
#: (Cloudflare's own propagation takes up to 60 s).
UNSETTLED_SECONDS = 60.0


class NearCache:
    """A bounded, time-limited, thread-safe map of KV key -> raw value (bytes or None for "missing").

    Use ``generation()`` before a KV read and pass it to ``fill()`` after: if
    this process wrote or deleted anything in between, the read may predate
    the write and is not kept.
    """

    def __init__(self, timeout: float, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        timeout, max_entries, max_bytes = float(timeout), int(max_entries), int(max_bytes)
        if timeout <= 0 or max_entries <= 0 or max_bytes <= 0:
            raise ValueError("a near cache needs a timeout, max_entries and max_bytes above 0")
        self.timeout, self.max_entries, self.max_bytes = timeout, max_entries, max_bytes
        self.hits = self.misses = 0
        self._reinit()

    def _reinit(self) -> None:
        self._lock = threading.Lock()
        # key -> (stored at, raw, size)
        self._entries: OrderedDict[str, tuple[float, bytes | None, int]] = OrderedDict()
        self._bytes = 0
        self._generation = 0
        # key -> clock.monotonic() until which no read of it is kept, oldest first; past max_entries keys, no
        # read of any key is kept until ``_all_unsettled``
        self._unsettled: OrderedDict[str, float] = OrderedDict()
        self._all_unsettled = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"<NearCache timeout={self.timeout:g}s entries={len(self._entries)}/{self.max_entries} "
                f"bytes={self._bytes}/{self.max_bytes} hits={self.hits} misses={self.misses}>")

    def get(self, key: str) -> Any:
        """Return the raw value kept for ``key`` (bytes, or None for a known miss), or MISSING."""
        now = clock.monotonic()
        with self._lock:
            found = self._entries.get(key)
            if found is None or now - found[0] >= self.timeout:
                if found is not None:
                    self._drop(key)
                self.misses += 1
                return MISSING
            self._entries.move_to_end(key)
            self.hits += 1
            return found[1]

    def generation(self) -> int:
        """Return a token to pass to fill() for a read starting now."""
        return self._generation

    def fill(self, key: str, raw: bytes | None, generation: int) -> None:
        """Keep ``raw`` (bytes or None) read from KV for ``key``, unless a write happened since ``generation``."""
        size = len(key) + (len(raw) if raw is not None else 0)
        if size > self.max_bytes:
            return
        with self._lock:
            if generation != self._generation or (
                    (self._unsettled or self._all_unsettled) and self._unsettled_now(key)):
                return
            self._drop(key)
            self._entries[key] = (clock.monotonic(), raw, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def invalidate(self, key: str) -> None:
        """Forget ``key``: this process is writing or deleting it."""
        with self._lock:
            self._generation += 1
            self._drop(key)

    def invalidate_many(self, keys: Iterable[str]) -> None:
        """Forget ``keys``: this process is writing or deleting them."""
        with self._lock:
            self._generation += 1
            for key in keys:
                self._drop(key)

    def unsettle(self, keys: Iterable[str]) -> None:
        """Forget ``keys``, and keep no read of them for UNSETTLED_SECONDS: a write of them got no answer."""
        now = clock.monotonic()
        until = now + UNSETTLED_SECONDS
        with self._lock:
            self._generation += 1
            self._settle(now)
            for key in keys:
                self._drop(key)
                self._unsettled[key] = until
                self._unsettled.move_to_end(key)  # the map stays in the order its ends come
            if len(self._unsettled) > self.max_entries:  # an outage: keep no read at all for a while
                self._unsettled.clear()
                self._all_unsettled = until

    @contextlib.contextmanager
    def writing(self, keys: Iterable[str]) -> Iterator[None]:
        """Around a write of ``keys``: forget them once it is answered; if it is not (failed, timed out,
        cancelled), it may still land, so keep no read of them for a while (:meth:`unsettle`)."""
        try:
            yield
        except BaseException:
            self.unsettle(keys)
            raise
        self.invalidate_many(keys)

    def _settle(self, now: float) -> None:
        """Forget the keys whose writes have surely landed by now (the oldest first, so this stops at once)."""
        while self._unsettled and next(iter(self._unsettled.values())) <= now:
            self._unsettled.popitem(last=False)

    def _unsettled_now(self, key: str) -> bool:
        now = clock.monotonic()
        self._settle(now)
        return now < self._all_unsettled or key in self._unsettled

    def clear(self) -> None:
        """Forget everything (and any read in flight)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._bytes = 0

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= found[2]


class NearKV:
    """A KV object whose reads go through a NearCache and whose writes invalidate it.

    ``get`` and ``get_many`` answer from memory when they can; ``put``,
    ``put_many``, ``delete`` and ``delete_many`` forget their keys once KV has
    answered, so no read in flight can bring back an old value; and when it has
    not (failed, timed out, cancelled), keep no read of them for a while.
    Everything else (metadata, listings) goes to KV unchanged. ``fresh`` is
    the KV object itself, for reads that must not be served from memory
    (read-modify-write operations).
    """

    def __init__(self, kv: Any, near: NearCache) -> None:
        self.fresh, self.near = kv, near

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fresh, name)

    def get(self, key: str) -> bytes | None:
        raw = self.near.get(key)
        if raw is MISSING:
            generation = self.near.generation()
            raw = self.fresh.get(key)
            self.near.fill(key, raw, generation)
        return raw

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        found, wanted = self._remembered(keys)
        if wanted:
            generation = self.near.generation()
            self._fill(found, wanted, self.fresh.get_many(wanted), generation)
        return found

    def _remembered(self, keys: Iterable[str]) -> tuple[dict[str, bytes], list[str]]:
        """Return ({key: value} answered from memory, [keys to read from KV])."""
        found: dict[str, bytes] = {}
        wanted: list[str] = []
        for key in keys:
            raw = self.near.get(key)
            if raw is MISSING:
                wanted.append(key)
            elif raw is not None:
                found[key] = raw
        return found, wanted

    def _fill(self, found: dict[str, bytes], wanted: list[str], fetched: dict[str, bytes], generation: int) -> None:
        for key in wanted:
            self.near.fill(key, fetched.get(key), generation)
        found.update(fetched)

    def _writing(self, keys: list[str]) -> contextlib.AbstractContextManager[None]:
        return self.near.writing(keys)

    def put(self, key: str, value: bytes | str, **kwargs: Any) -> None:
        with self._writing([key]):
            return self.fresh.put(key, value, **kwargs)

    def put_many(self, items: list[Mapping[str, Any]]) -> None:
        with self._writing([item["key"] for item in items]):
            return self.fresh.put_many(items)

    def delete(self, key: str) -> None:
        with self._writing([key]):
            return self.fresh.delete(key)

    def delete_many(self, keys: list[str]) -> None:
        with self._writing(list(keys)):
            return self.fresh.delete_many(keys)

    # The async twins: the same memory, the KV object's own async calls.

    async def aget(self, key: str) -> bytes | None:
        raw = self.near.get(key)
        if raw is MISSING:
            generation = self.near.generation()
            raw = await self.fresh.aget(key)
            self.near.fill(key, raw, generation)
        return raw

    async def aget_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        found, wanted = self._remembered(keys)
        if wanted:
            generation = self.near.generation()
            self._fill(found, wanted, await self.fresh.aget_many(wanted), generation)
        return found

    async def aput(self, key: str, value: bytes | str, **kwargs: Any) -> None:
        with self._writing([key]):
            return await self.fresh.aput(key, value, **kwargs)

    async def aput_many(self, items: list[Mapping[str, Any]]) -> None:
        with self._writing([item["key"] for item in items]):
            return await self.fresh.aput_many(items)

    async def adelete(self, key: str) -> None:
        with self._writing([key]):
            return await self.fresh.adelete(key)

    async def adelete_many(self, keys: list[str]) -> None:
        with self._writing(list(keys)):
            return await self.fresh.adelete_many(keys)


_registry: dict[Hashable, NearCache] = {}
_registry_lock = threading.Lock()


def near_cache(space: Hashable, timeout: float | None, max_entries: int = DEFAULT_MAX_ENTRIES,
               max_bytes: int = DEFAULT_MAX_BYTES) -> NearCache | None:
    """Return the process-wide NearCache for ``space`` (a hashable naming the key space), or None if off.

    ``timeout`` <= 0 (or None) means off. Every caller naming the same space
    and bounds shares one near cache, so a write through one cache object
    invalidates what the others (other threads) would read.
    """
    if not timeout or timeout <= 0:
        return None
    bounds = (float(timeout), int(max_entries), int(max_bytes))
    with _registry_lock:
        found = _registry.get(space)
        if found is None or (found.timeout, found.max_entries, found.max_bytes) != bounds:
            found = _registry[space] = NearCache(*bounds)
        return found


def reset() -> None:
    """Empty every near cache in this process (tests; settings changes; after fork)."""
    with _registry_lock:
        for cache in _registry.values():
            cache.clear()
        _registry.clear()


def _after_fork_in_child() -> None:
    # The parent's locks may have been held by another thread at fork time: make new ones.
    global _registry_lock
    _registry_lock = threading.Lock()
    for cache in list(_registry.values()):
        cache._reinit()
    _registry.clear()


# A test pointing CACHES, CFKV or the session settings elsewhere must not read old values.
conf.on_reset(reset, settings=("CACHES", "CFKV", "SESSION_*"))
conf.on_reset(_after_fork_in_child, after_fork=True)
