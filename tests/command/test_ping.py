"""manage.py cfkv ping: on the emulator, the embedded store and the Worker gateway under Miniflare."""


import requests

from tests.command.helpers import run, run_json


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


def test_ping_recognises_the_gateway(settings, gateway):
    settings.CFKV = {"default": {**gateway.settings(), "MAX_RETRIES": 0}}
    health = requests.get(f"{gateway.url}/__cfkv/health", headers=gateway.headers(), timeout=10).json()["result"]
    data = run_json("ping", "--read-only")
    assert data["gateway"] == {"service": "django-cfkv-gateway", "version": health["version"],
                               "namespace_id": gateway.namespace_id}
    assert health["version"] and data["steps"][0]["step"] == "list"
    assert f"django-cfkv Worker gateway, version {health['version']}" in run("ping")
