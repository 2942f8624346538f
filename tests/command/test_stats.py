"""manage.py cfkv stats: counts, sizes, expiries, the API calls it makes, its progress line."""

import io

from tests.command.helpers import FakeTTY, run, run_json, seed


def test_stats_counts_sizes_and_expiry(kv):
    seed(kv)
    data = run_json("stats")
    assert data["keys"] == 5 and data["sizes_read"] is False
    assert data["kinds"]["sessions"] == {"count": 2, "bytes": 22, "bytes_known": 1}
    assert data["kinds"]["other"] == {"count": 1, "bytes": 0, "bytes_known": 0}
    assert data["expiry"] == {"expired": 1, "lt_1h": 1, "lt_1d": 0, "lt_7d": 0, "later": 1, "never": 2}
    assert data["largest"] == [{"key": "session:live", "kind": "sessions", "bytes": 22}]
    data = run_json("stats", "--sizes")
    assert data["sizes_read"] is True
    assert {k: v["bytes"] for k, v in data["kinds"].items()} == {
        "sessions": 44, "cache": 34, "ratelimit": 12, "other": 3}
    assert data["largest"][0] == {"key": "c:1:page", "kind": "cache", "bytes": 34}
    assert run_json("stats", "--prefix", "rl:")["keys"] == 1
    text = run("stats")
    assert "expired, not yet removed" in text and "--sizes reads those values" in text


def test_stats_api_calls(emulated_alias, cfkv_calls):
    kv = emulated_alias
    kv.put_many([{"key": f"k{i:04}", "value": "x" * 10, "metadata": {"kind": "cache"}} for i in range(2100)])
    kv.put("bin", b"\xff\x00")
    cfkv_calls.reset()
    data = run_json("stats")
    assert data["api_calls"] == {"list": 3} == cfkv_calls.counts
    cfkv_calls.reset()
    data = run_json("stats", "--sizes")
    assert data["kinds"]["cache"]["bytes"] == 21000 and data["kinds"]["other"]["bytes"] == 2
    # 22 bulk reads of 100; the chunk holding the binary value is refused, then halved
    # (100 -> 50 -> 25 -> 13 -> 7 -> 4: 10 more bulk reads) and its last 4 keys read singly.
    assert data["api_calls"] == {"list": 3, "bulk_get": 22 + 10, "get": 4} == cfkv_calls.counts


def test_progress_on_a_terminal_only(kv):
    kv.put_many([{"key": f"k{i:04}", "value": "v"} for i in range(1500)])
    quiet = io.StringIO()
    run("stats", stderr=quiet)
    assert quiet.getvalue() == ""
    tty = FakeTTY()
    run("stats", stderr=tty)
    assert "listed 1000 keys" in tty.getvalue() and "listed 1500 keys" in tty.getvalue()
