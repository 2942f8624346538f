"""Windows and shards (django_cfkv.ratelimit.shards): which window a moment falls in, and what a limiter key
holds. No requests."""

from django_cfkv import clock
from django_cfkv import ratelimit as rl
from django_cfkv.local import LocalKV


def test_window_math():
    assert rl.window(0, 60) == (0, 0, 60)
    assert rl.window(59.999, 60) == (0, 0, 60)
    assert rl.window(60, 60) == (1, 60, 120)
    assert rl.window(1_700_000_123.5, 600) == (2_833_333, 1_699_999_800, 1_700_000_400)
    # Every process computes the same window from the clock alone.
    index, start, end = rl.window(1_700_000_000, 3600)
    assert start <= 1_700_000_000 < end and end - start == 3600 and start == index * 3600


def test_describe_shard():
    info = rl.describe_shard("rl:login:0123456789abcdef:60:28333333:a1b2c3d4",
                             {"kind": "ratelimit", "expires": 1_700_000_040, "count": 4, "limit": 5})
    assert info["policy"] == "login" and info["client"] == "0123456789abcdef"
    assert (info["period"], info["window"], info["process"], info["count"], info["limit"]) == (
        60, 28333333, "a1b2c3d4", 4, 5)
    assert (info["window_start"], info["window_end"], info["expired"]) == (1_699_999_980, 1_700_000_040, True)
    # From the value when there is no metadata, and the strict-mode cache key form.
    assert rl.describe_shard("rl:g/x.y:ab:3600:1", None, b"7")["count"] == 7
    assert rl.describe_shard("rl:g:ab:3600:1")["process"] is None
    assert rl.describe_shard("session:abc", {"kind": "session"}) is None
    assert rl.describe_shard("rl:garbage") is None
    for hostile in ("rl:g:ab:\u00b2:1", "rl:g:ab:60:\u0661", "rl:g:ab:60:" + "9" * 13, "rl:g:ab:-60:1"):
        assert rl.describe_shard(hostile) is None  # a namespace writer's name: no shard, never a ValueError


def test_a_shard_is_expired_from_the_moment_its_window_ends(monkeypatch):
    name = "rl:login:0123456789abcdef:60:28333333:a1b2c3d4"
    end = 28333334 * 60
    monkeypatch.setattr(clock, "now", lambda: end - 0.001)
    assert rl.describe_shard(name)["expired"] is False
    monkeypatch.setattr(clock, "now", lambda: end)
    assert rl.describe_shard(name)["expired"] is True


def test_a_written_shard_holds_its_count_in_value_and_metadata_and_outlives_its_window(tmp_path, monkeypatch):
    _, start, end = rl.window(clock.now(), 3600)
    now = start + 1  # an hour from the window's end: far past KV's 60 s minimum TTL
    monkeypatch.setattr(clock, "now", lambda: now)
    kv = LocalKV(tmp_path / "kv.sqlite3")
    counter = rl.ShardedCounter(kv, background=False, list_budget=0)
    for _ in range(12):
        counter.hit("login", "c", 20, 3600, now)
    assert counter.flush() == 1
    [info] = kv.iter_keys(prefix="rl:login:c:")
    assert info.metadata == {"kind": "ratelimit", "expires": end, "count": 12, "limit": 20, "size": 2}
    assert kv.get(info.name) == b"12"
    # KV keeps it a little past the window, so a process whose clock is behind still finds it.
    assert info.expiration >= end + rl.TTL_MARGIN
