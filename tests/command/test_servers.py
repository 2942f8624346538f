"""manage.py cfkv serve (the emulator) and gateway init (a wrangler project)."""


import pytest
from django.core.management.base import CommandError

from tests.command.helpers import run


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
