"""Cloudflare's own tools drive the gateway and the emulator.

The official `cloudflare` Python SDK and wrangler (Cloudflare's CLI, the
version pinned in tests/gateway/package.json) were written by nobody here:
what they do with our answers (auto-pagination, bulk calls, error classes,
the config they suggest) is the yardstick for "speaks the KV REST API".
Everything runs on loopback; wrangler cannot leave it (see tests.gateway.server.wrangler).
"""

import io
import itertools
import json
import re
import shlex

import cloudflare
import pytest
from django.core.management import call_command

from tests.gateway.server import GatewayServer, wrangler

ACCOUNT = "0123456789abcdef0123456789abcdef"


def sdk(base_url, token):
    return cloudflare.Cloudflare(api_token=token, base_url=base_url, max_retries=0, timeout=30)


# ------------------------------------------------------------------ the gateway


@pytest.fixture(scope="module")
def gw():
    with GatewayServer() as server:
        yield server


def test_sdk_namespace_list_ends_on_the_gateway(gw):
    # The SDK pages until a page comes back empty; each page is a billed
    # Worker request. islice() bounds the loop so a failure cannot hang.
    client = sdk(gw.base_url, gw.read_token)
    gw.reset_stats()
    listed = list(itertools.islice(client.kv.namespaces.list(account_id=gw.account_id), 10))
    assert [(n.id, n.title) for n in listed] == [(gw.namespace_id, "django-cfkv-gateway")]
    requests_made = [i for i in gw.stats()["invocations"] if i["path"].endswith("/namespaces")]
    assert len(requests_made) == 2  # page 1, then the empty page 2
    assert client.kv.namespaces.get(gw.namespace_id, account_id=gw.account_id).id == gw.namespace_id


def drive_data_calls(client, account_id, namespace_id):
    """Write, read, list (auto-paginated), bulk write/get/delete through the SDK."""
    ns = {"account_id": account_id, "namespace_id": namespace_id}
    binary = bytes(range(256))
    client.kv.namespaces.values.update("sdk/binary", value=binary, **ns)
    client.kv.namespaces.values.update("sdk/meta", value=b"text", metadata={"m": 1}, expiration_ttl=600, **ns)
    assert client.kv.namespaces.values.get("sdk/binary", **ns).read() == binary
    assert client.kv.namespaces.values.get("sdk/meta", **ns).read() == b"text"
    assert client.kv.namespaces.metadata.get("sdk/meta", **ns) == {"m": 1}

    items = [{"key": f"sdk/page/{i:02d}", "value": f"v{i}", "metadata": {"i": i}} for i in range(25)]
    done = client.kv.namespaces.bulk_update(body=items, **ns)
    assert done.successful_key_count == 25 and not done.unsuccessful_keys
    # The SDK follows result_info.cursor until it is empty: 3 pages of 10.
    keys = client.kv.namespaces.keys.list(prefix="sdk/page/", limit=10, **ns)
    assert [k.name for k in keys] == [i["key"] for i in items]
    assert [k.metadata for k in keys] == [{"i": i} for i in range(25)]

    got = client.kv.namespaces.bulk_get(keys=["sdk/page/00", "sdk/page/24", "sdk/none"], **ns)
    assert got.values == {"sdk/page/00": "v0", "sdk/page/24": "v24", "sdk/none": None}
    got = client.kv.namespaces.bulk_get(keys=["sdk/meta"], with_metadata=True, **ns)
    assert got.values["sdk/meta"].value == "text" and got.values["sdk/meta"].metadata == {"m": 1}

    done = client.kv.namespaces.bulk_delete(body=[i["key"] for i in items], **ns)
    assert done.successful_key_count == 25
    client.kv.namespaces.values.delete("sdk/meta", **ns)
    assert [k.name for k in client.kv.namespaces.keys.list(prefix="sdk/", **ns)] == ["sdk/binary"]
    with pytest.raises(cloudflare.NotFoundError):
        client.kv.namespaces.values.get("sdk/meta", **ns)


def test_sdk_data_calls_on_the_gateway(gw):
    drive_data_calls(sdk(gw.base_url, gw.token), gw.account_id, gw.namespace_id)
    reader = sdk(gw.base_url, gw.read_token)
    with pytest.raises(cloudflare.PermissionDeniedError):
        reader.kv.namespaces.values.update("sdk/x", value=b"v", account_id=gw.account_id,
                                           namespace_id=gw.namespace_id)
    with pytest.raises(cloudflare.PermissionDeniedError):
        sdk(gw.base_url, "wrong").kv.namespaces.keys.list(account_id=gw.account_id, namespace_id=gw.namespace_id)


# ------------------------------------------------------------------ the emulator


@pytest.fixture
def emulator(tmp_path):
    """An emulator of its own (its namespace list holds only this test's namespaces)."""
    from django_cfkv.emulator import EmulatorApp
    from django_cfkv.emulator.server import start_in_thread

    server = start_in_thread(EmulatorApp(tmp_path / "kv.sqlite3", token="emulator-token"))
    yield server
    server.shutdown()
    server.server_close()


def test_sdk_namespace_calls_on_the_emulator(emulator):
    client = sdk(emulator.base_url, "emulator-token")
    account = {"account_id": ACCOUNT}
    made = {t: client.kv.namespaces.create(title=t, **account).id for t in ["beta", "alpha", "gamma"]}

    def titles(**params):
        # Auto-pagination two at a time: pages of 2, 1, then an empty one ends it.
        pages = client.kv.namespaces.list(per_page=2, **params, **account)
        return [n.title for n in itertools.islice(pages, 10)]

    assert titles(order="title", direction="asc") == ["alpha", "beta", "gamma"]
    assert titles(order="title", direction="desc") == ["gamma", "beta", "alpha"]
    ids = [n.id for n in client.kv.namespaces.list(order="id", direction="desc", **account)]
    assert ids == sorted(made.values(), reverse=True)

    renamed = client.kv.namespaces.update(made["alpha"], title="omega", **account)
    assert (renamed.id, renamed.title) == (made["alpha"], "omega")
    assert client.kv.namespaces.get(made["alpha"], **account).title == "omega"
    with pytest.raises(cloudflare.BadRequestError):
        client.kv.namespaces.update(made["beta"], title="gamma", **account)

    client.kv.namespaces.values.update("k", value=b"v", namespace_id=made["gamma"], **account)
    client.kv.namespaces.delete(made["gamma"], **account)
    assert titles(order="title") == ["beta", "omega"]
    assert list(client.kv.namespaces.keys.list(namespace_id=made["gamma"], **account)) == []

    with pytest.raises(cloudflare.PermissionDeniedError):
        sdk(emulator.base_url, "wrong").kv.namespaces.list(**account)


def test_sdk_data_calls_on_the_emulator(emulator):
    drive_data_calls(sdk(emulator.base_url, "emulator-token"), ACCOUNT, "a" * 32)


# ------------------------------------------------------------------- wrangler


def test_wrangler_makes_the_namespace_gateway_init_asks_for(emulator, settings, tmp_path):
    # Run the command `cfkv gateway init` prints, as printed, in the project it
    # wrote: the binding wrangler then suggests must be the one the Worker reads.
    settings.CFKV = {}  # no NAMESPACE_ID to put in the project: it says how to make one
    out = io.StringIO()
    call_command("cfkv", "gateway", "init", str(tmp_path / "gw"), stdout=out)
    line = next(line for line in out.getvalue().splitlines() if "wrangler kv namespace create" in line)
    command = shlex.split(line)
    assert command[:2] == ["npx", "wrangler"]
    made = wrangler(*command[2:], base_url=emulator.base_url, token="emulator-token", account_id=ACCOUNT,
                    home=tmp_path, cwd=tmp_path / "gw").stdout
    suggested = re.search(r'\[\[kv_namespaces\]\]\s*binding = "([^"]+)"\s*id = "([0-9a-f]{32})"', made)
    toml = (tmp_path / "gw" / "wrangler.toml").read_text()
    configured = re.search(r'\[\[kv_namespaces\]\]\s*binding = "([^"]+)"', toml)
    assert suggested and configured, made
    assert suggested.group(1) == configured.group(1) == "KV"
    assert "env.KV" in (tmp_path / "gw" / "worker.js").read_text()
    listed = sdk(emulator.base_url, "emulator-token").kv.namespaces.list(account_id=ACCOUNT)
    assert suggested.group(2) in [n.id for n in listed]


def test_wrangler_namespace_and_key_commands_on_the_emulator(emulator, tmp_path):
    def run(*args):
        return wrangler(*args, base_url=emulator.base_url, token="emulator-token", account_id=ACCOUNT,
                        home=tmp_path).stdout

    client = sdk(emulator.base_url, "emulator-token")
    for title in ["zeta", "eta"]:
        run("kv", "namespace", "create", title)
    # wrangler asks for order=title, direction=asc, and pages with the SDK.
    assert [n["title"] for n in json.loads(run("kv", "namespace", "list"))] == ["eta", "zeta"]
    run("kv", "namespace", "rename", "zeta", "--new-name", "alpha")
    listed = json.loads(run("kv", "namespace", "list"))
    assert [n["title"] for n in listed] == ["alpha", "eta"]
    ns = ("--namespace-id", listed[0]["id"], "--remote")

    run("kv", "key", "put", "session:a b", "hello", "--metadata", '{"m": 1}', "--ttl", "600", *ns)
    assert run("kv", "key", "get", "session:a b", "--text", *ns).strip() == "hello"
    (tmp_path / "items.json").write_text(json.dumps([{"key": "text", "value": "v"},
                                                      {"key": "binary", "value": "/wA=", "base64": True}]))
    run("kv", "bulk", "put", str(tmp_path / "items.json"), *ns)
    assert client.kv.namespaces.values.get("binary", account_id=ACCOUNT, namespace_id=listed[0]["id"]).read() \
        == b"\xff\x00"
    keys = json.loads(run("kv", "key", "list", *ns))
    assert [k["name"] for k in keys] == ["binary", "session:a b", "text"]
    assert keys[1]["metadata"] == {"m": 1} and keys[1]["expiration"] > 0
    (tmp_path / "keys.json").write_text(json.dumps(["text", "session:a b"]))
    got = run("kv", "bulk", "get", str(tmp_path / "keys.json"), *ns)  # JSON, then "Success!"
    assert json.JSONDecoder().raw_decode(got)[0] == {"text": "v", "session:a b": "hello"}
    run("kv", "bulk", "delete", str(tmp_path / "keys.json"), "--force", *ns)
    run("kv", "key", "delete", "binary", *ns)
    assert json.loads(run("kv", "key", "list", *ns)) == []

    run("kv", "namespace", "delete", "--namespace-id", listed[0]["id"])
    assert [n["title"] for n in json.loads(run("kv", "namespace", "list"))] == ["eta"]


def test_wrangler_on_the_gateway(gw, tmp_path):
    def run(*args, token=gw.token):
        return wrangler(*args, base_url=gw.base_url, token=token, account_id=gw.account_id, home=tmp_path,
                        timeout=60).stdout

    # The SDK inside wrangler pages until an empty page: this ended only by timing out.
    listed = json.loads(run("kv", "namespace", "list", token=gw.read_token))
    assert listed == [{"id": gw.namespace_id, "title": "django-cfkv-gateway", "supports_url_encoding": True}]
    ns = ("--namespace-id", gw.namespace_id, "--remote")
    run("kv", "key", "put", "wr/k", "value", "--metadata", '{"m": 1}', *ns)
    assert run("kv", "key", "get", "wr/k", "--text", *ns, token=gw.read_token).strip() == "value"
    assert json.loads(run("kv", "key", "list", "--prefix", "wr/", *ns)) == [{"name": "wr/k", "metadata": {"m": 1}}]
    run("kv", "key", "delete", "wr/k", *ns)
    with pytest.raises(RuntimeError, match="Authentication error"):
        run("kv", "key", "put", "wr/k", "v", *ns, token=gw.read_token)
