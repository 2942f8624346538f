"""Windows and shards at their edges (django_cfkv.ratelimit.shards), from what mutation testing found no test
pinned: a shard holding one hit, the documented TTL, per-second windows, and names and values a namespace
writer plants. Straight on a store, no requests."""

import pytest

from django_cfkv import clock, maintenance
from django_cfkv import ratelimit as rl
from django_cfkv.local import LocalKV

HOUR = 3600


def test_a_stored_shard_holding_a_single_hit_counts_as_one(tmp_path):
    """A shard in the format stored-formats.md documents with ``count: 1`` is one hit, as any positive count
    is (this limiter writes a shard from its second hit, MIN_WRITE_COUNT; other writers of the format may not)."""
    kv = LocalKV(tmp_path / "kv.sqlite3")
    now = clock.now()
    index, _, end = rl.window(now, HOUR)
    prefix = rl.shard_prefix("p", "c", HOUR, index)
    for writer in ("a1.0", "b2.0", "c3.0"):
        kv.put(prefix + writer, "1", expiration_ttl=HOUR + 60,
               metadata={"kind": "ratelimit", "expires": end, "count": 1, "limit": 10, "size": 1})
    counter = rl.ShardedCounter(kv, background=False)
    assert counter.hit("p", "c", 10, HOUR, now)[0] == 4  # the three stored hits, and its own
    counter.close()


def test_a_shard_lives_in_kv_for_the_rest_of_its_window_plus_ten_seconds(tmp_path, monkeypatch):
    """The TTL stored-formats.md documents, max(60, seconds left in the window + 10): not shorter, so late
    readers find the shard, and not longer, so KV does not keep counts long after their window."""
    period = 1000  # "100/1000" (seconds): a window end that is not a multiple of 16
    index = int(clock.now() // period) // 2 * 2  # its end an odd multiple of 1000: in binary, ...1000
    start, end = index * period, (index + 1) * period
    now = start + 1
    monkeypatch.setattr(clock, "now", lambda: now)
    kv = LocalKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0)
    for _ in range(2):  # a shard is written from its second hit
        counter.hit("p", "c", 100, period, now)
    assert counter.flush() == 1
    [info] = kv.iter_keys(prefix="rl:p:c:")
    assert info.metadata["expires"] == end
    assert info.expiration == end + 10 == now + max(60, (end - now) + 10)
    counter.close()


def test_a_per_second_rules_shards_are_shards(tmp_path):
    """A "10/s" rule counts in windows of one second: its shards are described (cfkv ls, get) and, once its
    window is closed, one stored without metadata is swept as an orphan."""
    kv = LocalKV(tmp_path / "kv.sqlite3")
    now = clock.now()
    index = int(now) - 2 * HOUR
    name = f"rl:api:0123456789abcdef:1:{index}:worker.0"
    kv.put(name, "3")  # no metadata: the count in the value, the window only in the name
    info = rl.describe_shard(name, None, kv.get(name))
    assert (info["period"], info["window"], info["window_start"], info["window_end"]) == (1, index, index, index + 1)
    assert (info["process"], info["count"], info["expired"]) == ("worker.0", 3, True)
    report = maintenance.Sweep(kv, kinds=["ratelimit"], now=now).run()
    assert report["by_kind"]["ratelimit"] == {"expired": 0, "orphaned": 1} and kv.get(name) is None


def test_a_planted_name_with_a_period_of_zero_is_no_shard_and_the_sweep_goes_on(tmp_path):
    """A namespace writer's "rl:...:0:<n>" names no window (there is no window of zero seconds): no shard,
    never a ZeroDivisionError that stops manage.py cfkv sweep before the real orphans."""
    for name in ("rl:p:c:0:0", "rl:p:c:0:5:planted.0", "rl:p:c:000:7"):
        assert rl.describe_shard(name, None, b"1") is None
    kv = LocalKV(tmp_path / "kv.sqlite3")
    now = clock.now()
    orphan = f"rl:p:c:60:{int(now // 60) - 120}:worker.0"  # no metadata, a window closed two hours ago
    for name in ("rl:p:c:0:0", orphan):
        kv.put(name, "1")
    report = maintenance.Sweep(kv, kinds=["ratelimit"], now=now).run()
    assert report["by_kind"]["ratelimit"] == {"expired": 0, "orphaned": 1}
    assert kv.get(orphan) is None and kv.get("rl:p:c:0:0") == b"1"


@pytest.mark.parametrize("value", [b"junk", b"\xff\xfe", b"9" * 5000, b"", "junk", ["7"], {"count": 7}],
                         ids=["text", "not-utf8", "5000-digits", "empty", "str", "list", "dict"])
def test_a_value_that_is_no_count_is_an_unknown_count_never_an_exception(value):
    """A shard's value is anyone's to write: one that is no whole number (not UTF-8, more digits than int()
    reads, not even text) describes the shard with an unknown count, as cfkv get shows it."""
    info = rl.describe_shard("rl:p:c:60:28333333:worker.0", None, value)
    assert info is not None and info["count"] is None and info["window"] == 28333333


def test_the_count_is_read_from_a_value_given_as_text_as_from_bytes():
    """describe_shard(name, metadata, value) takes the value as text too (a value already decoded)."""
    name = "rl:p:c:60:28333333:worker.0"
    assert rl.describe_shard(name, None, "7")["count"] == rl.describe_shard(name, None, b"7")["count"] == 7


@pytest.mark.parametrize("value", [b"999", b"junk"])
def test_the_metadata_count_wins_over_what_the_value_says(value):
    """The count shown is the metadata's, the one the limiter sums (shard_count): a value that says otherwise,
    or nothing, does not change what cfkv ls and get show."""
    meta = {"kind": "ratelimit", "expires": 28333334 * 60, "count": 4, "limit": 5}
    info = rl.describe_shard("rl:p:c:60:28333333:worker.0", meta, value)
    assert (info["count"], info["limit"]) == (4, 5)
