"""manage.py cfkv ls, get, put and rm, on LocalKV and on the emulator."""

import io
import json
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_cfkv import inspect
from tests.command.helpers import HOUR, FakeTTY, run, run_json, seed


def test_ls_lists_keys_with_kind_and_exact_expiry(kv):
    now = seed(kv)
    data = run_json("ls")
    assert data["alias"] == "default" and data["more"] is False
    rows = {row["key"]: row for row in data["keys"]}
    assert sorted(rows) == ["blob", "c:1:page", "rl:login:ip:1", "session:live", "session:old"]
    assert rows["session:live"]["kind"] == "sessions"
    assert rows["session:live"]["expires"] == pytest.approx(now + HOUR)
    assert rows["session:live"]["kv_expiration"] == pytest.approx(now + 2 * HOUR, abs=2)
    assert rows["session:old"]["expired"] is True
    assert rows["c:1:page"] == {"key": "c:1:page", "kind": "cache", "expires": None, "expired": False,
                                "kv_expiration": None, "metadata": {"kind": "cache"}}
    assert rows["rl:login:ip:1"]["kind"] == "ratelimit" and rows["blob"]["kind"] == "other"
    text = run("ls", "--prefix", "session:")
    assert "session:live" in text and "session:old" in text and "blob" not in text
    assert " ago)" in text and "(in 60 min)" in text and "2 keys" in text


def test_ls_limit_says_more_are_left(kv):
    kv.put_many([{"key": f"k{i:02}", "value": "v"} for i in range(25)])
    data = run_json("ls", "--limit", "3")
    assert [r["key"] for r in data["keys"]] == ["k00", "k01", "k02"] and data["more"] is True
    assert len(run_json("ls", "--limit", "25")["keys"]) == 25
    with pytest.raises(CommandError, match="--limit"):
        run("ls", "--limit", "0")


def test_get_decodes_json_text_and_bytes(kv):
    seed(kv)
    data = run_json("get", "session:live")
    assert data["value"] == {"_auth_user_id": "1"} and data["kind"] == "sessions"
    assert data["size"] == 22 and data["expired"] is False
    blob = run_json("get", "blob")
    assert blob["format"] == "bytes" and blob["value"] == "AP8Q"  # base64 of the bytes
    kv.put("note", "héllo")
    assert run_json("get", "note")["value"] == "héllo"
    text = run("get", "session:old")
    assert "expired" in text and '"_auth_user_id": "2"' in text


def test_get_raw_writes_bytes_unchanged(kv):
    kv.put("blob", b"\x00\xff\r\n\x10")
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding="utf-8")
    call_command("cfkv", "get", "blob", "--raw", stdout=out)
    assert buffer.getvalue() == b"\x00\xff\r\n\x10"


def test_get_missing_key_is_a_command_error(kv):
    with pytest.raises(CommandError, match="No key 'nope'"):
        run("get", "nope")


def test_get_uses_a_kinds_decoder_when_installed(kv, monkeypatch):
    calls = []

    def decode_value(raw, format=None):
        calls.append(raw)
        return {"decoded": json.loads(raw)}, None

    module = type(json)("fake_sessions")
    module.decode_value = decode_value
    monkeypatch.setitem(__import__("sys").modules, "fake_sessions", module)
    monkeypatch.setitem(inspect.DECODERS, "sessions", "fake_sessions.decode_value")
    kv.put("session:abc", '{"a": 1}', metadata={"kind": "session"})
    data = run_json("get", "session:abc")
    assert data["value"] == {"decoded": {"a": 1}} and data["decoder"] == "fake_sessions.decode_value"
    # A value the decoder refuses is still shown, decoded generically.
    kv.put("session:bad", "not json", metadata={"kind": "session"})
    data = run_json("get", "session:bad")
    assert data["decoder"] == "generic" and data["value"] == "not json"


def test_get_decodes_what_the_session_engine_cache_and_limiter_store(kv, settings):
    from django.core.cache import caches

    from django_cfkv.sessions import SessionStore

    session = SessionStore()
    session["cart"] = [1, 2]
    session.create()
    data = run_json("get", SessionStore.kv_key(session.session_key))
    assert data["decoder"] == "django_cfkv.sessions.decode_value" and data["value"]["cart"] == [1, 2]
    assert data["value_expires"] == pytest.approx(data["expires"], abs=1)

    settings.CACHES = {"kv": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default"}}
    caches["kv"].set("answer", {"n": 42}, 300)
    [row] = [r for r in run_json("ls")["keys"] if r["kind"] == "cache"]
    data = run_json("get", row["key"])
    assert data["decoder"] == "django_cfkv.serializers.decode_entry" and data["value"] == {"n": 42}

    kv.put("rl:login:c1:60:123:p1", "3", metadata={"kind": "ratelimit", "count": 3})
    data = run_json("get", "rl:login:c1:60:123:p1")
    assert data["decoder"] == "django_cfkv.ratelimit.describe_shard"
    assert data["value"]["count"] == 3 and data["value"]["window_end"] == 124 * 60
    # A shard with no expiry but a window closed long ago is an orphan.
    # A namespace writer's names that look like shards, and are not: shown and swept past, never a crash.
    planted = ["rl:login:c1:\u00b2:1", "rl:login:c1:60:" + "9" * 400, "rl:login:c1:" + "9" * 13 + ":1"]
    for name in planted:
        kv.put(name, "1", metadata={"kind": "ratelimit"})
        assert run_json("get", name)["key"] == name
    report = run_json("sweep", "--kind", "ratelimit")
    assert report["by_kind"] == {"ratelimit": {"expired": 0, "orphaned": 1}} and report["deleted"] == 1
    assert all(kv.get(name) == b"1" for name in planted)


def test_put_value_file_ttl_and_metadata(kv, tmp_path):
    out = run("put", "greeting", "hello", "--ttl", "120", "--metadata", '{"v": 1}')
    assert "Stored 'greeting' (5 bytes, expires in 2 min)" in out
    entry = kv.get_with_metadata("greeting")
    assert entry.value == b"hello" and entry.metadata == {"v": 1}
    assert entry.expiration == pytest.approx(time.time() + 120, abs=3)
    path = tmp_path / "v.bin"
    path.write_bytes(b"\x00\x01\xfe")
    run("put", "bin", "--file", str(path))
    assert kv.get("bin") == b"\x00\x01\xfe"


@pytest.mark.parametrize("args, message", [
    (["k"], "as an argument or with --file"),
    (["k", "v", "--file", "x"], "as an argument or with --file"),
    (["k", "v", "--metadata", "{bad"], "--metadata is not valid JSON"),
    (["k", "v", "--ttl", "30"], "at least 60 seconds"),
    (["k", "--file", "/nonexistent/file"], "Cannot read /nonexistent/file"),
    (["", "v"], "cannot be empty"),
])
def test_put_bad_input_is_a_command_error(kv, args, message):
    with pytest.raises(CommandError, match=message):
        run("put", *args)
    assert kv.get("k") is None


def test_rm_refuses_without_yes_when_not_interactive(kv):
    seed(kv)
    with pytest.raises(CommandError, match="Refusing to delete 2 keys .* without --yes"):
        run("rm", "--prefix", "session:", stdin=io.StringIO(""))
    assert kv.get("session:live") is not None
    assert "Deleted 2 keys" in run("rm", "--prefix", "session:", "--yes", stdin=io.StringIO(""))
    assert [r["key"] for r in run_json("ls")["keys"]] == ["blob", "c:1:page", "rl:login:ip:1"]


def test_rm_asks_on_a_terminal(kv):
    seed(kv)
    out = run("rm", "blob", "c:1:page", stdin=FakeTTY("n\n"))
    assert "Delete 2 keys from CFKV alias 'default'? [y/N]" in out and "Nothing deleted" in out
    assert kv.get("blob") is not None
    out = run("rm", "blob", "c:1:page", stdin=FakeTTY("y\n"))
    assert "Deleted 2 keys" in out
    assert kv.get("blob") is None and kv.get("c:1:page") is None


def test_rm_dry_run_deletes_nothing(kv):
    seed(kv)
    out = run("rm", "--prefix", "session:", "--dry-run")
    assert out.splitlines() == ["session:live", "session:old",
                                "Would delete 2 keys from CFKV alias 'default' with prefix 'session:'."]
    assert kv.get("session:old") is not None


def test_rm_needs_keys_or_prefix(kv):
    with pytest.raises(CommandError, match="one of the two"):
        run("rm", "--yes")
    with pytest.raises(CommandError, match="one of the two"):
        run("rm", "a", "--prefix", "b", "--yes")


@pytest.mark.parametrize("expires", [1767225600000, 1e17, 1e300, 10**400],
                         ids=["milliseconds", "1e17", "1e300", "huge"])
def test_ls_and_get_show_a_planted_expiry_no_date_holds(kv, expires):
    """A namespace writer's metadata (an expiry in ms by mistake, or past any date): shown, never a crash."""
    kv.put("cache:planted", "{}", metadata={"kind": "cache", "expires": expires})
    kv.put("rl:login:c:999999999999:999999999999:p1", "1", metadata={"kind": "ratelimit"})
    listed = run("ls")
    assert "cache:planted" in listed and "rl:login:c:999999999999" in listed
    assert "cache:planted" in run("get", "cache:planted")
    assert run_json("get", "rl:login:c:999999999999:999999999999:p1")["value"]["window"] == 999999999999
    assert "rl:login" in run("get", "rl:login:c:999999999999:999999999999:p1")



@pytest.mark.parametrize("name", ["note", "cache:planted", "session:planted"])
def test_get_shows_a_planted_value_of_json_nested_past_the_recursion_limit_as_text(kv, name):
    """A namespace writer's value of "[" * 100000, of no kind or under a kind's prefix: shown as text,
    never a RecursionError out of the command."""
    nested = "[" * 100_000
    kv.put(name, nested)
    data = run_json("get", name)
    assert data["format"] == "text" and data["value"] == nested
