"""Counting (django_cfkv.ratelimit.counters): shards on KV that no other process writes, one write and one
list per second however many requests, bounded memory, an exact cache counter, and what a failed KV call
makes the counter do. Straight on a store, no requests."""

import logging
import re
import threading
import time

import pytest

from django_cfkv import clock
from django_cfkv import ratelimit as rl
from django_cfkv.exceptions import KVBulkError
from django_cfkv.local import LocalKV
from django_cfkv.ratelimit.shards import shard_count
from django_cfkv.testing import KVCalls


class RecordingKV(LocalKV):
    """A LocalKV that records when (on the package's clock) the counter lists and writes."""

    def __init__(self, path):
        super().__init__(path)
        self.writes, self.lists = [], []
        self._rec_lock = threading.Lock()

    def put_many(self, items):
        with self._rec_lock:
            self.writes.append((clock.monotonic(), [item["key"] for item in items]))
        return super().put_many(items)

    def list_keys(self, prefix=None, limit=1000, cursor=None):
        with self._rec_lock:
            self.lists.append((clock.monotonic(), prefix))
        return super().list_keys(prefix=prefix, limit=limit, cursor=cursor)


def test_counter_sums_other_processes_shards_and_never_writes_theirs(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    a, b = rl.ShardedCounter(kv, background=False), rl.ShardedCounter(kv, background=False)
    now = clock.now()
    assert a.hit("p", "c", 10, 3600, now)[:1] == (1,)
    assert a.hit("p", "c", 10, 3600, now)[0] == 2
    assert a.flush() == 1
    assert b.hit("p", "c", 10, 3600, now)[0] == 3  # b's first read sees a's shard
    assert b.flush() == 0  # a client seen once by a process costs no write
    assert b.hit("p", "c", 10, 3600, now)[0] == 4
    b.flush()
    keys = {info.name: info.metadata for info in kv.iter_keys(prefix="rl:p:c:")}
    assert len(keys) == 2 and {m["count"] for m in keys.values()} == {2}
    written = [key for _, batch in kv.writes for key in batch]
    writers = [key.rsplit(":", 1)[1] for key in written]
    assert writers == [f"{a.process}.0", f"{b.process}.0"]
    for name, meta in keys.items():
        assert meta["kind"] == "ratelimit" and meta["expires"] == rl.window(now, 3600)[2]
        assert rl.describe_shard(name, meta)["count"] == meta["count"]
    a.close()
    b.close()


def test_a_planted_shard_whose_numbers_no_float_holds_does_not_hide_the_others(tmp_path):
    """A namespace writer's shard under the client's prefix with ``expires: 10**400`` made reading the metadata
    raise OverflowError, so the counter never learned the other processes' counts (and let their requests by)."""
    kv = LocalKV(tmp_path / "kv.sqlite3")
    a, b = rl.ShardedCounter(kv, background=False), rl.ShardedCounter(kv, background=False)
    now = clock.now()
    for _ in range(3):
        a.hit("p", "c", 10, 3600, now)
    a.flush()
    prefix = rl.shard_prefix("p", "c", 3600, rl.window(now, 3600)[0])
    kv.put(prefix + "planted.0", "", metadata={"kind": "ratelimit", "expires": 10**400, "count": "many"})
    assert shard_count({"kind": "ratelimit", "expires": 10**400, "count": 4}) == 4
    assert b.hit("p", "c", 10, 3600, now)[0] == 4  # a's three, and b's own: the planted shard counts none
    a.close()
    b.close()


def test_counter_respects_one_write_and_one_read_per_second(tmp_path, monkeypatch):
    # The package's wall clock runs from the middle of an hour: on the real one the 2.3 s of hits could
    # straddle the end of the rule's hour-long window, and the count would go on in the next window's shard.
    offset = (time.time() // 3600) * 3600 + 1800 - time.time()
    monkeypatch.setattr(clock, "now", lambda: time.time() + offset)
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv)
    deadline = clock.monotonic() + 2.3

    def hammer():
        while clock.monotonic() < deadline:
            counter.hit("p", "c", 10**6, 3600, clock.now())

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counter.close()
    counter._thread.join(3)
    total = counter._shards[next(iter(counter._shards))].local
    assert total > 100  # many requests...
    assert 1 <= len(kv.lists) <= 4 and 1 <= len(kv.writes) <= 5  # ...few calls
    times = [t for t, _ in kv.lists]
    assert all(b - a >= 0.99 for a, b in zip(times, times[1:], strict=False))
    write_times = [t for t, _ in kv.writes]  # including close()'s final flush
    assert all(b - a >= 0.99 for a, b in zip(write_times, write_times[1:], strict=False))
    final = next(kv.iter_keys(prefix="rl:p:c:"))
    assert final.metadata["count"] == total  # nothing lost


def test_list_calls_share_one_budget_however_many_clients(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    writer, counter = rl.ShardedCounter(kv, background=False), rl.ShardedCounter(
        kv, background=False, list_budget=2)
    now = clock.now()
    for _ in range(3):
        writer.hit("p", "known", 10, 3600, now)
    writer.flush()
    kv.lists.clear()
    start = clock.monotonic()
    assert counter.hit("p", "known", 10, 3600, now)[0] == 4  # within the budget: reads the other shard
    counts = [counter.hit("p", f"client-{n}", 10, 3600, now)[0] for n in range(300)]
    elapsed = clock.monotonic() - start
    assert counts == [1] * 300  # past the budget: decided from the local count, without waiting for KV
    assert len(kv.lists) <= 2 + 2 * elapsed  # the burst, then 2 per second
    # Past the budget, a known client keeps the other processes' count it last read.
    assert counter.hit("p", "known", 10, 3600, now)[0] == 5
    # Clients seen once cost no write; the one seen twice does.
    assert counter.flush() == 1 and kv.writes[-1][1] == [f"rl:p:known:3600:{int(now // 3600)}:{counter.process}.0"]


def test_no_list_budget_never_reads(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0)
    assert [counter.hit("p", "c", 10, 3600, clock.now())[0] for _ in range(3)] == [1, 2, 3]
    assert kv.lists == []


def test_shards_in_memory_are_bounded_and_pending_counts_kept_first(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0, max_shards=50)
    now = clock.now()
    counter.hit("p", "closed", 10, 60, now - 120)  # an old window, least recently hit
    counter.hit("p", "hot", 10, 3600, now)
    counter.hit("p", "hot", 10, 3600, now)  # two requests: a count to write
    for n in range(200):
        counter.hit("p", f"once-{n}", 10, 3600, now)
    assert len(counter._shards) == 50
    kept = {prefix.split(":")[2] for prefix in counter._shards}
    assert "hot" in kept and "closed" not in kept and "once-0" not in kept and "once-199" in kept
    assert counter.hit("p", "hot", 10, 3600, now)[0] == 3
    assert counter.flush() == 1


def test_close_waits_for_the_write_spacing_only_in_the_background(tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr(clock, "sleep", slept.append)
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    now = clock.now()
    counters = (rl.ShardedCounter(kv, background=False), rl.ShardedCounter(kv, per_request=True),
                rl.ShardedCounter(kv))
    for counter in counters:
        for _ in range(2):
            counter.hit("p", counter.process, 10, 3600, now)
        counter.flush()
        counter.hit("p", counter.process, 10, 3600, now)  # pending, less than a second after its write
        counter.close()
    # Only the background counter (production) waits, within KV's one write per second per key.
    assert len(slept) == 1 and 0 < slept[0] <= 1.0
    final = {info.name.rsplit(":", 1)[1].split(".")[0]: info.metadata["count"] for info in kv.iter_keys(prefix="rl:p:")}
    # background=False writes only what flush() allows; per request, everything is written.
    assert (final[counters[0].process], final[counters[1].process]) == (2, 3)


def test_per_request_counter_reads_once_and_writes_every_changed_request(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, per_request=True, list_budget=0)
    now = clock.now()
    writes = []
    for _ in range(4):
        counter.hit("p", "c", 10, 3600, now)
        counter.after_request()
        writes.append(len(kv.writes))
    assert len(kv.lists) == 1 and writes == [0, 1, 2, 3] and counter._thread is None
    counter.close()
    assert len(kv.writes) == 3


def test_cache_counter_is_exact():
    from django.core.cache import caches

    cache = caches["default"]
    cache.clear()
    counter = rl.CacheCounter(cache)
    now = clock.now()
    counts = []
    threads = [threading.Thread(target=lambda: counts.append(counter.hit("p", "c", 5, 60, now)[0]))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == list(range(1, 21))
    assert counter.hit("p", "c", 5, 60, now + 60)[0] == 1  # next window


@pytest.mark.parametrize("awaited", [False, True], ids=["blocking", "awaited"])
def test_cache_counter_counts_when_its_key_expires_between_add_and_incr(awaited):
    """Strict mode's add, then incr, on the cache's blocking or async methods: an incr that finds the key gone
    (it expired in between, so Django's incr raises ValueError) starts the count again with add."""
    from asgiref.sync import async_to_sync
    from django.core.cache.backends.locmem import LocMemCache

    calls = []

    class ExpiringCache(LocMemCache):
        def add(self, key, value, timeout=None, version=None):
            calls.append("add")
            return super().add(key, value, timeout, version)

        def incr(self, key, delta=1, version=None):
            calls.append("incr")
            self.delete(key)  # the window's key expires here
            return super().incr(key, delta, version)

        async def aadd(self, key, value, timeout=None, version=None):
            calls.append("aadd")
            return self.add(key, value, timeout, version)

        async def aincr(self, key, delta=1, version=None):
            calls.append("aincr")
            return self.incr(key, delta, version)

    cache = ExpiringCache("strict-mode-expiry", {})
    cache.clear()  # LocMemCache's entries belong to its name, for the whole process
    counter = rl.CacheCounter(cache)
    hit = async_to_sync(counter.ahit) if awaited else counter.hit
    now = clock.now()
    assert hit("p", "c", 5, 3600, now)[0] == 1
    assert hit("p", "c", 5, 3600, now)[0] == 1  # incr found nothing: a fresh count
    awaited_calls = ["aadd", "add", "aadd", "add", "aincr", "incr", "aadd", "add"]
    assert calls == (awaited_calls if awaited else ["add", "add", "incr", "add"])


def test_a_cap_below_one_shard_still_counts(tmp_path):
    counter = rl.ShardedCounter(LocalKV(tmp_path / "kv.sqlite3"), background=False, list_budget=0, max_shards=0)
    assert [counter.hit("p", "c", 5, 3600, clock.now())[0] for _ in range(3)] == [1, 2, 3]


# What a failed KV call makes the counter do


class _Offset:
    """The package's monotonic clock, moved on by ``offset`` seconds."""

    def __init__(self, real):
        self.real, self.offset = real, 0.0

    def __call__(self):
        return self.real() + self.offset


def test_counter_counts_locally_while_kv_is_down(emulator, caplog, monkeypatch):
    monotonic = _Offset(clock.monotonic)
    monkeypatch.setattr(clock, "monotonic", monotonic)
    kv = emulator.client(max_retries=0)
    counter = rl.ShardedCounter(kv, background=False)
    now = clock.now()
    emulator.set_faults(rate_503=1.0)
    results = [counter.hit("p", "c", 2, 3600, now) for _ in range(3)]
    assert [(count, ok) for count, _, ok in results] == [(1, False), (2, False), (3, False)]
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1  # logged once, not per request
    assert counter.flush() == 0  # refused: the count stays pending
    emulator.clear_faults()
    monotonic.offset += 1.0  # KV's one write per second per key, from the refused write
    assert counter.flush() == 1
    assert [info.metadata["count"] for info in kv.iter_keys(prefix="rl:p:c:")] == [3]  # nothing lost
    counter.close()
    kv.close()


@pytest.mark.parametrize("account_wide", [False, True], ids=["one-call", "quota-spent"])
def test_only_a_spent_account_quota_keeps_the_counter_off_kv_for_its_retry_after(emulator, caplog, monkeypatch,
                                                                                  account_wide):
    monotonic = _Offset(clock.monotonic)
    monkeypatch.setattr(clock, "monotonic", monotonic)
    namespace = emulator.new_namespace_id()
    kv = emulator.client(namespace, max_retries=0)
    counter = rl.ShardedCounter(kv, background=False)
    caplog.set_level(logging.ERROR, logger="django_cfkv.ratelimit")
    now = clock.now()
    try:
        if account_wide:  # Cloudflare's 1,200 calls per 5 minutes, spent by another client of the account
            emulator.app.enforce_quota = True
            spender = emulator.client(namespace, max_retries=0)
            for _ in range(1200):
                spender.get("k")
            spender.close()
        else:  # a 429 about this one call, with a long Retry-After
            emulator.set_faults(rate_429=1.0, retry_after=240)
        assert counter.hit("p", "first", 10, 3600, now)[2] is False
        [logged] = [r.getMessage() for r in caplog.records if "could not read" in r.getMessage()]
        paused = int(re.search(r"counting locally for (\d+) s", logged).group(1))
        emulator.app.enforce_quota = False
        emulator.reset_quota()
        emulator.clear_faults()
        monotonic.offset = rl.OUTAGE_BACKOFF + 1  # KV answers again; past the usual backoff
        calls = KVCalls()
        reachable = counter.hit("p", "second", 10, 3600, now)[2]
        if account_wide:
            assert 200 < paused <= 300  # Retry-After: what is left of the quota's 5 minutes
            assert reachable is False and calls.counts == {}  # still off KV
            monotonic.offset = 301
            assert counter.hit("p", "third", 10, 3600, now)[2] is True and calls.counts == {"list": 1}
        else:
            assert paused == rl.OUTAGE_BACKOFF  # not its Retry-After
            assert reachable is True and calls.counts == {"list": 1}  # back on KV after the usual backoff
    finally:
        emulator.app.enforce_quota = False
        kv.close()
        counter.close()


class _SlowWrites(RecordingKV):
    """Bulk writes answered ``delay`` seconds (on the package's clock) after they are sent, as over a slow link."""

    def __init__(self, path, monotonic, delay):
        super().__init__(path)
        self.monotonic, self.delay = monotonic, delay

    def put_many(self, items):
        result = super().put_many(items)
        self.monotonic.offset += self.delay
        return result


def test_writes_of_a_shard_are_spaced_from_when_the_last_one_was_answered(tmp_path, monkeypatch):
    """KV counts one write per second per key from the write's arrival, which may be as late as its answer."""
    monotonic = _Offset(clock.monotonic)
    monkeypatch.setattr(clock, "monotonic", monotonic)
    kv = _SlowWrites(tmp_path / "kv.sqlite3", monotonic, delay=0.6)
    counter = rl.ShardedCounter(kv, background=False, interval=1.0)
    now = clock.now()
    counter.hit("p", "c", 100, 3600, now)
    counter.hit("p", "c", 100, 3600, now)
    sent = monotonic.offset
    assert counter.flush() == 1  # answered 0.6 s later
    counter.hit("p", "c", 100, 3600, now)
    monotonic.offset = sent + 1.1  # 1.1 s after it was sent, 0.5 s after its answer
    assert counter.flush() == 0
    monotonic.offset += 0.6
    assert counter.flush() == 1
    counter.close()


def test_an_outage_costs_one_call_per_backoff_and_one_log_line_per_30_s(emulator, caplog, monkeypatch):
    monotonic = _Offset(clock.monotonic)
    monkeypatch.setattr(clock, "monotonic", monotonic)
    kv = emulator.client(max_retries=0)
    counter = rl.ShardedCounter(kv, background=False, list_budget=100)
    now = clock.now()
    emulator.set_faults(rate_503=1.0)
    calls = KVCalls()
    assert [counter.hit("p", f"client-{n}", 10, 3600, now)[2] for n in range(5)] == [False] * 5
    assert calls.counts == {"list": 1}  # the first failure keeps every other client off KV for the backoff
    monotonic.offset = rl.OUTAGE_BACKOFF + 1
    assert counter.hit("p", "client-after-the-backoff", 10, 3600, now)[2] is False
    assert calls.counts == {"list": 2}
    errors = [r for r in caplog.records if r.name == "django_cfkv.ratelimit" and r.levelno == logging.ERROR]
    assert len(errors) == 1  # two failures within LOG_EVERY: one line
    monotonic.offset += rl.LOG_EVERY
    counter.hit("p", "client-later-still", 10, 3600, now)
    errors = [r for r in caplog.records if r.name == "django_cfkv.ratelimit" and r.levelno == logging.ERROR]
    assert len(errors) == 2
    counter.close()
    kv.close()


@pytest.mark.parametrize("per_request", [True, False], ids=["per-request", "background"])
def test_no_write_is_tried_while_kv_is_known_to_be_down(emulator, per_request):
    kv = emulator.client(max_retries=0)
    counter = rl.ShardedCounter(kv, background=False, per_request=per_request)
    emulator.set_faults(rate_503=1.0)
    calls = KVCalls()
    for _ in range(3):
        counter.hit("p", "c", 10, 3600, clock.now())
        counter.after_request()
    counter.close()
    assert calls.counts == {"list": 1}  # the failed read; no write while the backoff lasts, nor when closing
    kv.close()


def test_eviction_keeps_a_client_whose_count_is_mostly_other_processes(tmp_path):
    kv = LocalKV(tmp_path / "kv.sqlite3")
    now = clock.now()
    other = rl.ShardedCounter(kv, background=False)
    for _ in range(5):
        other.hit("p", "hot", 6, 3600, now)
    other.flush()
    # A list budget of one call: the first read, then none for a long while.
    counter = rl.ShardedCounter(kv, background=False, list_budget=0.001, max_shards=3)
    assert counter.hit("p", "hot", 6, 3600, now)[0] == 6
    for n in range(3):  # one-off identities push a shard out; none of them is read
        counter.hit("p", f"once-{n}", 6, 3600, now)
    assert counter.hit("p", "hot", 6, 3600, now)[0] == 7  # its shard was kept, with the others' count in it


def test_a_re_read_does_not_count_the_processes_own_shard_twice(tmp_path, monkeypatch):
    monotonic = _Offset(clock.monotonic)
    monkeypatch.setattr(clock, "monotonic", monotonic)
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False)
    now = clock.now()
    for _ in range(3):
        counter.hit("p", "c", 10, 3600, now)
    assert counter.flush() == 1  # its shard holds 3
    monotonic.offset += 1.1  # due to read the other processes' shards again
    assert counter.hit("p", "c", 10, 3600, now)[0] == 4
    assert len(kv.lists) == 2


def test_a_closed_window_is_never_written(tmp_path):
    kv = RecordingKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0)
    ended = clock.now() - 120
    for _ in range(3):
        counter.hit("p", "c", 10, 60, ended)
    assert counter.flush() == 0 and kv.writes == []


class _NamesNoKeys(LocalKV):
    """A KV backend (BACKEND may name any class with the KV interface) whose failed bulk write does not say
    which keys it left unwritten."""

    fail = True

    def put_many(self, items):
        if self.fail:
            raise KVBulkError("bulk write failed")
        return super().put_many(items)


def test_a_bulk_failure_that_names_no_keys_keeps_every_count(tmp_path, monkeypatch):
    monotonic = _Offset(clock.monotonic)
    monkeypatch.setattr(clock, "monotonic", monotonic)
    kv = _NamesNoKeys(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0)
    for _ in range(2):
        counter.hit("p", "c", 10, 3600, clock.now())
    assert counter.flush() == 0
    kv.fail = False
    monotonic.offset += 1.0
    assert counter.flush() == 1
    assert [info.metadata["count"] for info in kv.iter_keys(prefix="rl:p:c:")] == [2]


def test_a_strict_mode_count_lives_until_its_window_ends():
    from django.core.cache.backends.locmem import LocMemCache

    class RecordingCache(LocMemCache):
        def add(self, key, value, timeout=None, version=None):
            timeouts.append(timeout)
            return super().add(key, value, timeout, version)

    timeouts = []
    counter = rl.CacheCounter(RecordingCache("strict-mode-ttl", {}))
    _, start, end = rl.window(clock.now(), 3600)
    assert counter.hit("p", "c", 5, 3600, start + 10)[0] == 1
    assert timeouts and all(timeout >= end - (start + 10) for timeout in timeouts)
