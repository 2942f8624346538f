"""Windows and shards (django_cfkv.ratelimit.shards): which window a moment falls in, and what a limiter key
holds. No requests."""

from django_cfkv import ratelimit as rl


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
