"""ShardedCounter's writing half: the shards it keeps in memory, their changes sent in one bulk write
(per request, or by a background thread at most once per interval each), and backing off when KV fails.
See :mod:`.counters` for why each process writes only its own shards."""

import logging
import math
import threading
from collections import OrderedDict
from typing import Any

from .. import clock
from ..exceptions import KVBulkError, KVError
from ..types import KV
from .shards import TTL_MARGIN, shard_item

logger = logging.getLogger("django_cfkv.ratelimit")

FIRST_WRITE_DELAY = 0.1  # seconds: a burst's first requests go out in one write, not one each
OUTAGE_BACKOFF = 5.0  # seconds without KV calls after a failure
LOG_EVERY = 30.0  # seconds between two "KV unreachable" log lines


class Shard:
    """One (policy, client, window) as this process counts it."""

    __slots__ = ("prefix", "key", "end", "limit", "local", "remote", "next_read", "ok", "written_at", "due")

    def __init__(self, prefix: str, writer: str, end: int, limit: int) -> None:
        self.prefix, self.key, self.end, self.limit = prefix, prefix + writer, end, limit
        self.local = self.remote = 0  # this process's requests; the other shards' counts, as last read
        self.next_read = self.written_at = float("-inf")
        self.due = clock.monotonic() + FIRST_WRITE_DELAY  # when the background thread first writes it
        self.ok = True


class ShardWriter:
    """Writes a ShardedCounter's changed shards, and keeps every counter off KV for a while after a failure."""

    # Set by ShardedCounter.__init__.
    kv: KV
    interval: float
    per_request: bool
    background: bool
    _lock: threading.Condition
    _shards: OrderedDict[str, Shard]
    _dirty: set[str]
    _down_until: float
    _logged_at: float
    _thread: threading.Thread | None
    _stop: threading.Event

    def after_request(self) -> None:
        """Write what the request changed, when counting ``per_request`` (and KV is not known to be down)."""
        if self._writes_per_request():
            self.flush()

    async def aafter_request(self) -> None:
        """The async twin of :meth:`after_request` (the write awaited)."""
        if self._writes_per_request():
            await self.aflush()

    def _writes_per_request(self) -> bool:
        return self.per_request and clock.monotonic() >= self._down_until

    def flush(self) -> int:
        """Write every changed shard of an open window, at most once per interval each (unless
        counting ``per_request``); return how many."""
        batch, items = self._batch_items()
        if not batch:
            return 0
        try:
            self.kv.put_many(items)
        except KVError as exc:
            return self._written(batch, items, exc)
        return self._written(batch, items, None)

    async def aflush(self) -> int:
        """The async twin of :meth:`flush` (the bulk write awaited)."""
        batch, items = self._batch_items()
        if not batch:
            return 0
        try:
            await self.kv.aput_many(items)
        except KVError as exc:
            return self._written(batch, items, exc)
        return self._written(batch, items, None)

    def _batch_items(self) -> tuple[list[tuple[Shard, int]], list[dict[str, Any]]]:
        now = clock.now()
        batch = self._take_batch(now)
        return batch, [shard_item(shard.key, count, shard.end, shard.limit, now) for shard, count in batch]

    def _written(self, batch: list[tuple[Shard, int]], items: list[dict[str, Any]], exc: KVError | None) -> int:
        """Take the outcome of a flush's bulk write (``exc``: how it failed); return how many shards it wrote."""
        failed: set[str] = set()
        if exc is not None:
            failed = set(exc.keys) if isinstance(exc, KVBulkError) and exc.keys else {item["key"] for item in items}
            self._failed(exc, "write")
        # KV takes one write per second per key, counted from when a write
        # arrives, which is at most when the call returned: space the next from then.
        done = clock.monotonic()
        with self._lock:
            for shard, _ in batch:
                shard.written_at, shard.due = done, done + self.interval
                if shard.key in failed:
                    self._dirty.add(shard.prefix)
        return len(batch) - len(failed)

    def _take_batch(self, now: float) -> list[tuple[Shard, int]]:
        # The shards to write now, with their counts; closed windows are forgotten on the way.
        mono = clock.monotonic()
        with self._lock:
            batch = []
            for prefix in list(self._dirty):
                shard = self._shards.get(prefix)
                if shard is None or shard.end <= now:
                    self._dirty.discard(prefix)
                elif self.per_request or mono >= shard.written_at + self.interval:
                    self._dirty.discard(prefix)
                    shard.written_at = mono
                    shard.due = mono + self.interval
                    batch.append((shard, shard.local))
            for prefix in [p for p, s in self._shards.items() if s.end + TTL_MARGIN <= now]:
                del self._shards[prefix]
        return batch

    def _failed(self, exc: KVError, action: str) -> None:
        mono = clock.monotonic()
        # A 429 about one key or call says nothing of the others: only a spent
        # account quota (or an outage) keeps every counter off KV for longer.
        retry_after = getattr(exc, "retry_after", None) if getattr(exc, "account_wide", False) else None
        pause = max(OUTAGE_BACKOFF, float(retry_after or 0))
        with self._lock:
            self._down_until = max(self._down_until, mono + pause)
            log = mono - self._logged_at >= LOG_EVERY
            if log:
                self._logged_at = mono
        if log:
            logger.error("Rate limiting could not %s Workers KV (%s); counting locally for %.0f s.",
                         action, exc, pause)

    def _start_flusher(self) -> None:
        # Called with the lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="cfkv-ratelimit-flush", daemon=True)
            self._thread.start()
        self._lock.notify()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self._dirty and not self._stop.is_set():
                    self._lock.wait()
                if self._stop.is_set():
                    return  # close() writes what is pending
                due = min((self._shards[p].due for p in self._dirty if p in self._shards), default=0.0)
                delay = max(due, self._down_until) - clock.monotonic()
                if delay > 0:
                    self._lock.wait(min(delay, self.interval * 5))
                    continue
            try:
                self.flush()
            except Exception:  # the thread must outlive any bug
                logger.exception("Rate-limit flush failed.")

    def close(self) -> None:
        """Stop counting: end the background thread, then write what is pending before returning,
        so no write lands later (in the next test, or after a reload) unless KV is known to be down."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)  # an in-flight flush finishes; a waiting thread returns at once
        if clock.monotonic() < self._down_until:
            return
        if self.background:  # KV takes one write per second per key: wait (at most an interval) until allowed
            with self._lock:
                ready = max((self._shards[p].written_at + self.interval for p in self._dirty
                             if p in self._shards), default=-math.inf)
            if ready > clock.monotonic():
                clock.sleep(min(ready - clock.monotonic(), self.interval))
        try:
            self.flush()
        except Exception:
            logger.exception("Rate-limit flush failed.")
