"""manage.py cfkv, through call_command, on LocalKV and on the emulator."""

import io
import json
import math
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_cfkv import get_kv, inspect, maintenance, transport
from django_cfkv.emulator.app import EmulatorApp
from django_cfkv.emulator.server import start_in_thread

HOUR = 3600


class FakeTTY(io.StringIO):
    """A terminal stand-in: isatty() is True, answers come from ``text``."""

    def isatty(self):
        return True


def run(*args, stdin=None, stderr=None):
    """Run ``manage.py cfkv *args``; return its stdout."""
    out = io.StringIO()
    kwargs = {"stdin": stdin} if stdin is not None else {}
    call_command("cfkv", *args, stdout=out, stderr=stderr or io.StringIO(), **kwargs)
    return out.getvalue()


def run_json(*args):
    return json.loads(run(*args, "--json"))


@pytest.fixture
def local_alias(settings, tmp_path):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    return get_kv()


@pytest.fixture
def emulated_alias(cfkv):
    """The default alias on a fresh emulator namespace, with a fresh simulated API window."""
    return cfkv


@pytest.fixture(params=["local", "emulated"])
def kv(request):
    """The default alias on a fresh, empty namespace of each backend."""
    return request.getfixturevalue(f"{request.param}_alias")


def seed(kv, now=None):
    """Store one entry of each kind and state; return ``now``."""
    now = time.time() if now is None else now
    kv.put("session:live", '{"_auth_user_id": "1"}', expiration_ttl=2 * HOUR,
           metadata={"kind": "session", "expires": now + HOUR, "size": 22})
    kv.put("session:old", '{"_auth_user_id": "2"}', expiration_ttl=HOUR,
           metadata={"kind": "session", "expires": now - 600})
    kv.put("c:1:page", '{"expires": null, "value": [1, 2]}', metadata={"kind": "cache"})
    kv.put("rl:login:ip:1", '{"count": 3}', expiration_ttl=HOUR,
           metadata={"kind": "ratelimit", "expires": now + 30 * 86400})
    kv.put("blob", b"\x00\xff\x10")
    return now


# ls / get / put


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
    report = run_json("sweep", "--kind", "ratelimit")
    assert report["by_kind"] == {"ratelimit": {"expired": 0, "orphaned": 1}} and report["deleted"] == 1


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


# rm


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


# stats


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


def test_stats_api_calls(emulated_alias):
    kv = emulated_alias
    kv.put_many([{"key": f"k{i:04}", "value": "x" * 10, "metadata": {"kind": "cache"}} for i in range(2100)])
    kv.put("bin", b"\xff\x00")
    transport.calls.reset()
    data = run_json("stats")
    assert data["api_calls"] == {"list": 3} == transport.calls.snapshot()
    transport.calls.reset()
    data = run_json("stats", "--sizes")
    assert data["kinds"]["cache"]["bytes"] == 21000 and data["kinds"]["other"]["bytes"] == 2
    # 22 bulk reads of 100; the chunk holding the binary value is refused, then halved
    # (100 -> 50 -> 25 -> 13 -> 7 -> 4: 10 more bulk reads) and its last 4 keys read singly.
    assert transport.calls.snapshot() == {"list": 3, "bulk_get": 22 + 10, "get": 4}


# sweep


def test_sweep_deletes_only_our_expired_entries(kv):
    now = seed(kv)
    kv.put("cache:recent", "{}", expiration_ttl=HOUR,
           metadata={"kind": "cache", "expires": now - 10})  # within the grace period
    kv.put("foreign", "x", expiration_ttl=HOUR, metadata={"expires": now - 600})  # not ours
    report = run_json("sweep", "--dry-run")
    assert report["dry_run"] is True and report["found"] == 1 and report["deleted"] == 0
    assert kv.get("session:old") is not None
    report = run_json("sweep")
    assert report["by_kind"]["sessions"] == {"expired": 1, "orphaned": 0}
    assert report["deleted"] == 1 and report["scanned"] == 7
    assert kv.get("session:old") is None
    assert kv.get("cache:recent") is not None and kv.get("foreign") is not None
    assert run_json("sweep")["found"] == 0


def test_sweep_kind_filter(kv):
    now = time.time()
    for name, kind in [("s", "session"), ("c", "cache"), ("r", "ratelimit")]:
        kv.put(name, "{}", expiration_ttl=HOUR, metadata={"kind": kind, "expires": now - 600})
    assert run_json("sweep", "--kind", "cache")["deleted"] == 1
    assert kv.get("c") is None and kv.get("s") is not None
    out = run("sweep")
    assert "Deleted 2" in out
    assert kv.get("s") is None and kv.get("r") is None


def test_sweep_reads_worker_sessions_that_carry_expiry_in_the_value(kv):
    now = time.time()
    kv.put("session:w-old", json.dumps({"userId": 1, "expiresAt": int((now - 600) * 1000)}))
    kv.put("session:w-iso", json.dumps({"userId": 2, "expiresAt": "2001-01-01T00:00:00Z"}))
    kv.put("session:w-new", json.dumps({"userId": 3, "expiresAt": int((now + 600) * 1000)}))
    kv.put("session:opaque", "signed:abc")
    report = run_json("sweep")
    assert report["deleted"] == 2 and report["values_read"] == 4
    assert [r["key"] for r in run_json("ls")["keys"]] == ["session:opaque", "session:w-new"]


def test_sweep_20000_keys_api_calls(emulated_alias):
    kv, now = emulated_alias, time.time()
    items = [{"key": f"cache:{i:05}", "value": "{}", "expiration_ttl": HOUR,
              "metadata": {"kind": "cache", "expires": now - 600 if i % 5 else now + HOUR}}
             for i in range(20_000)]
    kv.put_many(items)
    transport.calls.reset()
    report = run_json("sweep")
    expired = 16_000
    assert report["deleted"] == expired and report["scanned"] == 20_000 and report["values_read"] == 0
    assert report["api_calls"] == transport.calls.snapshot()
    assert transport.calls.snapshot() == {"list": math.ceil(20_000 / 1000),
                                          "bulk_delete": math.ceil(expired / 10_000)}
    assert run_json("stats")["keys"] == 4_000


def test_interrupted_sweep_is_finished_by_the_next(local_alias):
    kv, now = local_alias, time.time()
    kv.put_many([{"key": f"s{i:04}", "value": "{}", "expiration_ttl": HOUR,
                  "metadata": {"kind": "session", "expires": now - 600}} for i in range(2500)])

    def interrupt(scanned, deleted):
        if deleted:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        maintenance.Sweep(kv, batch_size=300, progress=interrupt).run()
    left = len(list(kv.iter_keys()))
    assert 0 < left < 2500
    assert run_json("sweep")["deleted"] == left
    assert list(kv.iter_keys()) == []


# ping


def test_ping_emulator_reports_latency_and_budget(emulated_alias, cfkv_calls):
    data = run_json("ping")
    assert [s["step"] for s in data["steps"]] == ["list", "put", "get", "delete"]
    assert data["probe"] == "ok" and data["backend"] == "KVClient" and data["gateway"] is None
    assert 0 < data["budget"]["remaining"] <= 1200
    assert cfkv_calls.counts == {"list": 1, "put": 1, "get": 1, "delete": 1, "health": 1}
    assert list(emulated_alias.iter_keys()) == []  # the probe key is gone
    cfkv_calls.reset()
    text = run("ping", "--read-only")
    assert "OK: CFKV alias 'default', KVClient" in text and "API budget:" in text and "put" not in text
    assert cfkv_calls.counts == {"list": 1, "health": 1}


def test_ping_local(local_alias):
    data = run_json("ping")
    assert data["backend"] == "LocalKV" and data["budget"] is None and data["probe"] == "ok"


class GatewayLikeApp(EmulatorApp):
    """The emulator plus the gateway's health answer, as django_cfkv/gateway/worker.js gives it."""

    def handle(self, environ):
        if environ["PATH_INFO"] == "/__cfkv/health":
            if environ.get("HTTP_AUTHORIZATION") != f"Bearer {self.token}":
                return 401, {"Content-Type": "application/json"}, b'{"success":false}'
            body = {"success": True, "errors": [], "messages": [],
                    "result": {"service": "django-cfkv-gateway", "version": "1.2.3", "namespace_id": "ns1"}}
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        return super().handle(environ)


def test_ping_recognises_the_gateway(settings, tmp_path):
    server = start_in_thread(GatewayLikeApp(tmp_path / "gw.sqlite3", token="gw-token-1234"))
    try:
        settings.CFKV = {"default": {"ACCOUNT_ID": "gateway", "NAMESPACE_ID": "ns1",
                                     "API_TOKEN": "gw-token-1234", "BASE_URL": server.base_url}}
        data = run_json("ping", "--read-only")
        assert data["gateway"] == {"service": "django-cfkv-gateway", "version": "1.2.3",
                                   "namespace_id": "ns1"}
        assert "django-cfkv Worker gateway, version 1.2.3" in run("ping")
    finally:
        server.shutdown()
        server.server_close()


# errors and secrets


def test_wrong_token_is_a_command_error_without_the_token(settings, cfkv_emulator):
    settings.CFKV = {"default": cfkv_emulator.alias_settings(API_TOKEN="wrong-secret-token-XYZ")}
    with pytest.raises(CommandError) as caught:
        run("ls")
    assert "API_TOKEN" in str(caught.value) and "wrong-secret-token-XYZ" not in str(caught.value)


def test_unreachable_server_says_what_to_check(settings, cfkv_emulator):
    settings.CFKV = {"default": cfkv_emulator.alias_settings(BASE_URL="http://127.0.0.1:9/client/v4",
                                                             MAX_RETRIES=0, TIMEOUT=2)}
    with pytest.raises(CommandError, match=r"Check CFKV\['default'\]\['BASE_URL'\]"):
        run("ping", "--read-only")


def test_unknown_alias_is_a_command_error(local_alias):
    with pytest.raises(CommandError, match="alias 'nope' is not configured"):
        run("ls", "--alias", "nope")


def test_rate_limited_says_what_to_do(emulated_alias, cfkv_emulator):
    with cfkv_emulator.faults(rate_429=1.0, retry_after=600):
        with pytest.raises(CommandError, match="Wait for the window"):
            run("ls")


def test_the_token_never_appears_in_any_output(settings, cfkv_emulator, tmp_path):
    token = "tok-" + "s3cr3t" * 6
    server = start_in_thread(GatewayLikeApp(tmp_path / "t.sqlite3", token=token))
    try:
        settings.CFKV = {"default": {"ACCOUNT_ID": "a", "NAMESPACE_ID": "n", "API_TOKEN": token,
                                     "BASE_URL": server.base_url}}
        seed(get_kv())
        outputs = []
        for args in (["ls"], ["ls", "--json"], ["get", "session:live"], ["get", "blob", "--json"],
                     ["stats", "--sizes"], ["stats", "--json"], ["ping"], ["ping", "--json"],
                     ["sweep", "--dry-run"], ["sweep", "--json"], ["put", "k", "v"],
                     ["rm", "k", "--yes"], ["rm", "--prefix", "x", "--dry-run"]):
            err = io.StringIO()
            outputs += [run(*args, stderr=err), err.getvalue()]
        settings.CFKV = {"default": {**settings.CFKV["default"], "API_TOKEN": token + "-wrong"}}
        for args in (["ls"], ["ping"], ["get", "x"]):
            with pytest.raises(CommandError) as caught:
                run(*args)
            outputs.append(str(caught.value))
    finally:
        server.shutdown()
        server.server_close()
    assert outputs[0] and len(outputs) == 29
    assert not [text for text in outputs if token in text]


# progress


def test_progress_on_a_terminal_only(kv):
    kv.put_many([{"key": f"k{i:04}", "value": "v"} for i in range(1500)])
    quiet = io.StringIO()
    run("stats", stderr=quiet)
    assert quiet.getvalue() == ""
    tty = FakeTTY()
    run("stats", stderr=tty)
    assert "listed 1000 keys" in tty.getvalue() and "listed 1500 keys" in tty.getvalue()


# serve and gateway init


def test_serve_runs_the_emulator(monkeypatch, tmp_path):
    from django_cfkv.client import KVClient
    from django_cfkv.emulator.server import EmulatorServer

    seen = {}
    real_serve_forever = EmulatorServer.serve_forever

    def serve_briefly(server):
        import threading

        thread = threading.Thread(target=real_serve_forever, args=(server,), daemon=True)
        thread.start()
        try:
            client = KVClient("acct", "ns", "t0ken", base_url=server.base_url, max_retries=0)
            client.put("k", "v")
            seen["value"] = client.get("k")
            client.close()
        finally:
            server.shutdown()

    monkeypatch.setattr(EmulatorServer, "serve_forever", serve_briefly)
    out = run("serve", "--port", "0", "--path", str(tmp_path / "e.sqlite3"), "--token", "t0ken")
    assert seen["value"] == b"v"
    assert "cfkv emulator on http://127.0.0.1:" in out and "t0ken" not in out


def test_gateway_init_writes_the_project(local_alias, tmp_path, settings):
    target = tmp_path / "gw"
    out = run("gateway", "init", str(target), "--namespace-id", "a" * 32)
    assert (target / "worker.js").exists() and f'id = "{"a" * 32}"' in (target / "wrangler.toml").read_text()
    assert "Wrote" in out and "npx wrangler deploy" in out
    with pytest.raises(CommandError, match="already exists; pass --force"):
        run("gateway", "init", str(target))
    settings.CFKV = {"default": {"BACKEND": "cloudflare", "NAMESPACE_ID": "b" * 32}}
    run("gateway", "init", str(target), "--force", "--name", "my-gw")
    toml = (target / "wrangler.toml").read_text()
    assert f'id = "{"b" * 32}"' in toml and 'name = "my-gw"' in toml
    with pytest.raises(CommandError, match="Invalid Worker name"):
        run("gateway", "init", str(tmp_path / "x"), "--name", "Bad Name")


def test_sweep_that_leaves_keys_says_to_run_again(emulated_alias, cfkv_emulator):
    kv, now = emulated_alias, time.time()
    kv.put_many([{"key": f"c{i:03}", "value": "{}", "expiration_ttl": HOUR,
                  "metadata": {"kind": "cache", "expires": now - 600}} for i in range(50)])
    err = io.StringIO()
    with cfkv_emulator.faults(bulk_unsuccessful=0.5):
        with pytest.raises(CommandError, match="keys were left; run the command again to finish"):
            run("sweep", stderr=err)
    assert "Stopped after scanning 50 keys" in err.getvalue()
    left = len(list(kv.iter_keys()))
    assert 0 < left < 50
    assert run_json("sweep")["deleted"] == left
    assert list(kv.iter_keys()) == []
