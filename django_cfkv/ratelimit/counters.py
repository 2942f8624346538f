"""Counting: one shard per process on Workers KV (ShardedCounter), or a cache's atomic incr (CacheCounter).

Counting without lost updates
-----------------------------
KV has no atomic increment, allows one write per second per key, and its
reads may be up to ~60 s stale at other locations. So no process ever writes
a counter that another process writes. Each process counts locally and
writes only its own *shard* ``rl:<policy>:<client>:<period>:<window>:<process>.<n>``
(the count is in the value and in the metadata), and only once the client
has made ``MIN_WRITE_COUNT`` (2) requests to it in the window, so a client
seen once costs no write. All of its changed shards go out in one bulk
write, at most once per ``SYNC_INTERVAL`` (1 s). The total for a (policy,
client) is the local count plus the other shards' counts, which come from
one listing by prefix (the counts are in the metadata, so no value is read)
at most once per ``SYNC_INTERVAL``.

API calls must not grow with the number of clients, which an attacker
chooses (IPv6 networks, parameter values, user names), so list calls share
one per-process budget, ``LIST_BUDGET`` per second across all clients. Past
it, a request is decided from the local count plus the last other-shard
count read, without waiting for KV. A process therefore makes at most one
bulk write per second plus ``LIST_BUDGET`` lists per second, however many
clients send however fast. Memory is bounded too: at most ``MAX_SHARDS``
shards are kept. Of the least recently used, a closed window is dropped
first, else the lowest count, so a flood of identities that each send a
request or two does not push out a busier client. A shard built again after
being dropped gets a new key (the ``<n>``, unique in the process): the key
it had keeps its stored count, which the first read adds in, so the count
goes on from what is stored and no write ever lowers a stored count.

The price is accuracy. Another process's requests are seen up to about two
sync intervals late (its flush, then our read), so a window may admit up to
about (processes - 1) x per-process request rate x 2 x SYNC_INTERVAL more
than the limit, plus (processes - 1) single requests never written, and more
while KV's caches at other locations are stale or the list budget is spent.
Each process also enforces the limit on its own count, so no window admits
more than processes x limit.
When a limit must be exact, set ``CACHE`` to a Django cache with an atomic
``incr`` (Redis, Memcached).
"""

import itertools
import math
import secrets
import threading
from collections import OrderedDict

from .. import clock
from ..exceptions import KVAuthError, KVError, KVNotFoundError
from ..types import KV, KeyPage
from .flushing import FIRST_WRITE_DELAY, LOG_EVERY, OUTAGE_BACKOFF, Shard, ShardWriter, logger
from .shards import shard_count, shard_prefix, window
from .strict import CacheCounter

__all__ = [
    "EVICT_SCAN", "FIRST_WRITE_DELAY", "LOG_EVERY", "MAX_SHARDS", "MIN_WRITE_COUNT", "OUTAGE_BACKOFF",
    "CacheCounter", "ShardedCounter", "logger",
]

MIN_WRITE_COUNT = 2  # a shard is written once it counts this many requests: a client seen once costs no write
MAX_SHARDS = 10_000  # shards kept in memory per process (a few MB)
EVICT_SCAN = 64  # least recently used shards looked at for one that is closed or has nothing to write


class ShardedCounter(ShardWriter):
    """Count on KV with one shard per process; see the module docstring.

    Thread-safe. A daemon thread writes changed shards in the background, so
    no request waits for a write; a request waits for at most one list call,
    and only when its (policy, client) was not read in the last interval and
    the process's ``list_budget`` (list calls per second) is not spent.

    ``per_request=True`` (inside django_cfkv.testing's helpers) takes the clock
    out of the decisions, so a test sees the same calls on every run: each
    (policy, client, window) is read once, on its first request, and
    ``after_request()`` writes what the request changed before it returns,
    with no background thread and no once-per-second spacing.
    """

    def __init__(self, kv: KV, *, interval: float = 1.0, background: bool = True, list_budget: float = 1.0,
                 max_shards: int | None = None, per_request: bool = False) -> None:
        self.kv = kv
        self.interval = float(interval)
        self.per_request = per_request
        self.background = background and not per_request  # False: only flush() writes (tests, scripts)
        self.list_budget = float(list_budget)
        self.max_shards = MAX_SHARDS if max_shards is None else max_shards
        self.process = secrets.token_hex(4)
        self._serial = itertools.count()  # each shard built gets its own key: see _shard()
        self._lock = threading.Condition()
        self._shards: OrderedDict[str, Shard] = OrderedDict()  # least recently hit first
        self._tokens = self._capacity = max(1.0, self.list_budget) if self.list_budget > 0 else 0.0
        self._tokens_at = clock.monotonic()
        self._dirty: set[str] = set()
        self._down_until = float("-inf")
        self._logged_at = float("-inf")
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def hit(self, policy: str, client: str, limit: int, period: int, now: float,
            increment: bool = True) -> tuple[int, int, bool]:
        """Count one request (or only look, without ``increment``); return ``(count in window, window end,
        KV reachable)``."""
        shard, end, read = self._claim(policy, client, limit, period, now)
        if read:
            self._read(shard)
        return self._count(shard, end, increment)

    async def ahit(self, policy: str, client: str, limit: int, period: int, now: float,
                   increment: bool = True) -> tuple[int, int, bool]:
        """The async twin of :meth:`hit`: the same decisions, its list call awaited (no thread)."""
        shard, end, read = self._claim(policy, client, limit, period, now)
        if read:
            await self._aread(shard)
        return self._count(shard, end, increment)

    def _claim(self, policy: str, client: str, limit: int, period: int, now: float) -> tuple[Shard, int, bool]:
        """Return (the shard, its window's end, whether this request reads the other shards' counts)."""
        index, _, end = window(now, period)
        prefix = shard_prefix(policy, client, period, index)
        mono = clock.monotonic()
        with self._lock:
            shard = self._shard(prefix, end, limit, now)
            read = mono >= shard.next_read and mono >= self._down_until and (
                self.per_request or self._take_list_token(mono))
            if read:  # claimed: other threads use the last totals
                shard.next_read = math.inf if self.per_request else mono + self.interval
            elif mono < self._down_until:
                shard.ok = False
        return shard, end, read

    def _count(self, shard: Shard, end: int, increment: bool) -> tuple[int, int, bool]:
        with self._lock:
            shard.local += increment
            if shard.local >= MIN_WRITE_COUNT and shard.prefix not in self._dirty:
                self._dirty.add(shard.prefix)
                if self.background:
                    self._start_flusher()
            return shard.local + shard.remote, end, shard.ok

    def _shard(self, prefix: str, end: int, limit: int, now: float) -> Shard:
        # Called with the lock held: the shard of ``prefix``, now the most recently hit.
        shard = self._shards.get(prefix)
        if shard is not None:
            self._shards.move_to_end(prefix)
            return shard
        # A new key for every shard built, never the key of one dropped from memory earlier: that
        # key keeps its stored count, and the first read adds it in, so no write lowers a count.
        writer = f"{self.process}.{next(self._serial):x}"
        shard = self._shards[prefix] = Shard(prefix, writer, end, limit)
        if len(self._shards) > self.max_shards:
            self._evict(now)
        return shard

    def _take_list_token(self, mono: float) -> bool:
        # Called with the lock held. A token bucket: list_budget calls per second, bursts of max(1, budget).
        self._tokens = min(self._capacity, self._tokens + (mono - self._tokens_at) * self.list_budget)
        self._tokens_at = mono
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _evict(self, now: float) -> None:
        # Called with the lock held, the newest shard last. Of the least recently hit (never the newest),
        # drop one whose window is closed, else the lowest count, one with nothing to write first: a flood
        # of identities that each send a request or two never pushes out a client that sent more.
        victim: str | None = None
        lowest: tuple[int, bool] | None = None
        for prefix, shard in itertools.islice(self._shards.items(), min(EVICT_SCAN, len(self._shards) - 1)):
            if shard.end <= now:
                victim = prefix
                break
            rank = (shard.local + shard.remote, prefix in self._dirty)
            if lowest is None or rank < lowest:
                victim, lowest = prefix, rank
                if rank <= (1, False):  # a client seen once, nothing to write: none ranks lower
                    break
        if victim is not None:  # None: the newest is the only shard (a cap below 1)
            del self._shards[victim]
            self._dirty.discard(victim)

    def _read(self, shard: Shard) -> None:
        try:
            page = self.kv.list_keys(prefix=shard.prefix)
        except KVError as exc:
            self._read_failed(shard, exc)
        else:
            self._read_page(shard, page)

    async def _aread(self, shard: Shard) -> None:
        try:
            page = await self.kv.alist_keys(prefix=shard.prefix)
        except KVError as exc:
            self._read_failed(shard, exc)
        else:
            self._read_page(shard, page)

    def _read_page(self, shard: Shard, page: KeyPage) -> None:
        remote = sum(shard_count(info.metadata) for info in page.keys if info.name != shard.key)
        with self._lock:
            shard.remote, shard.ok = remote, True

    def _read_failed(self, shard: Shard, exc: KVError) -> None:
        if isinstance(exc, (KVAuthError, KVNotFoundError)):
            with self._lock:
                shard.next_read = float("-inf")  # the next request meets the error too, until it is fixed
            raise exc
        self._failed(exc, "read")
        with self._lock:
            shard.ok = False
