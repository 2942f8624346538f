"""The emulator speaks Cloudflare's documented wire format to any client, not only ours."""

import http.client
import json
import socket
import subprocess
import sys
import time

import pytest
import requests

from django_cfkv.testing import connections_opened


@pytest.fixture
def ns(cfkv_emulator):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {cfkv_emulator.token}"
    base = f"{cfkv_emulator.base_url}/accounts/{cfkv_emulator.account_id}/storage/kv/namespaces/" \
           f"{cfkv_emulator.new_namespace_id()}"
    yield session, base
    session.close()
    cfkv_emulator.clear_faults()


def errors(response):
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    return [e["code"] for e in body["errors"]]


def test_value_read_is_raw_with_expiration_header(ns):
    s, base = ns
    r = s.put(f"{base}/values/k%2Fx", data=b"\x00bytes", params={"expiration_ttl": 120})
    assert r.status_code == 200 and r.json() == {"success": True, "errors": [], "messages": [], "result": None}
    r = s.get(f"{base}/values/k%2Fx")
    assert r.content == b"\x00bytes" and r.headers["Content-Type"] == "application/octet-stream"
    assert int(r.headers["expiration"]) > time.time()


def test_missing_key_is_404_10009(ns):
    s, base = ns
    r = s.get(f"{base}/values/none")
    assert r.status_code == 404 and errors(r) == [10009]
    assert r.json()["errors"][0]["message"] == "get: 'key not found'"


def test_multipart_put_with_metadata_like_curl_form(ns):
    s, base = ns
    r = s.put(f"{base}/values/m", files={"value": (None, "Some Value"),
                                         "metadata": (None, '{"someMetadataKey": "someMetadataValue"}')})
    assert r.ok
    assert s.get(f"{base}/metadata/m").json()["result"] == {"someMetadataKey": "someMetadataValue"}
    listed = s.get(f"{base}/keys").json()
    assert listed["result"] == [{"name": "m", "metadata": {"someMetadataKey": "someMetadataValue"}}]
    assert listed["result_info"] == {"count": 1, "cursor": ""}


@pytest.mark.parametrize("params, status, code", [
    ({"expiration_ttl": "30"}, 400, 10034),
    ({"expiration_ttl": "abc"}, 400, 10034),
    ({"expiration": "60"}, 400, 10033),
])
def test_expiry_validation(ns, params, status, code):
    s, base = ns
    r = s.put(f"{base}/values/k", data=b"v", params=params)
    assert r.status_code == status and errors(r) == [code]


# Dot segments are sent percent-encoded: HTTP clients would otherwise resolve them away.
@pytest.mark.parametrize("key, status, code", [("%2E%2E", 400, 10042), ("%2E", 400, 10042), ("x" * 513, 414, 10030)])
def test_key_validation(ns, key, status, code):
    s, base = ns
    r = s.put(f"{base}/values/{key}", data=b"v")
    assert r.status_code == status and errors(r) == [code]


def test_oversized_metadata_is_413_10047(ns):
    s, base = ns
    r = s.put(f"{base}/values/k", files={"value": (None, "v"), "metadata": (None, json.dumps({"x": "y" * 2000}))})
    assert r.status_code == 413 and errors(r) == [10047]


def test_list_limit_bounds(ns):
    s, base = ns
    for limit in (9, 1001, "x"):
        r = s.get(f"{base}/keys", params={"limit": limit})
        assert r.status_code == 400 and errors(r) == [10028]


def test_bulk_write_get_delete_shapes(ns):
    s, base = ns
    r = s.put(f"{base}/bulk", json=[{"key": "a", "value": "1"}, {"key": "b", "value": "/wA=", "base64": True},
                                    {"key": "c", "value": '{"x": 1}', "metadata": {"m": 2}, "expiration_ttl": 300}])
    assert r.json()["result"] == {"successful_key_count": 3, "unsuccessful_keys": []}
    assert s.get(f"{base}/values/b").content == b"\xff\x00"
    r = s.post(f"{base}/bulk/get", json={"keys": ["a", "c", "zz"]})
    assert r.json()["result"] == {"values": {"a": "1", "c": '{"x": 1}', "zz": None}}
    r = s.post(f"{base}/bulk/get", json={"keys": ["c"], "type": "json", "withMetadata": True})
    value = r.json()["result"]["values"]["c"]
    assert value["value"] == {"x": 1} and value["metadata"] == {"m": 2} and value["expiration"] > time.time()
    r = s.post(f"{base}/bulk/get", json={"keys": [f"k{i}" for i in range(101)]})
    assert r.status_code == 400
    r = s.post(f"{base}/bulk/delete", json=["a", "b"])
    assert r.json()["result"] == {"successful_key_count": 2, "unsuccessful_keys": []}
    r = s.delete(f"{base}/bulk", json=["c"])  # the deprecated form still works
    assert r.ok and s.get(f"{base}/keys").json()["result"] == []


def test_bulk_limits(ns):
    s, base = ns
    r = s.put(f"{base}/bulk", json=[{"key": f"k{i}", "value": "v"} for i in range(10001)])
    assert r.status_code == 400
    r = s.post(f"{base}/bulk/delete", json=[f"k{i}" for i in range(10001)])
    assert r.status_code == 400


def test_namespaces_list_and_create(cfkv_emulator):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {cfkv_emulator.token}"
    url = f"{cfkv_emulator.base_url}/accounts/{cfkv_emulator.account_id}/storage/kv/namespaces"
    title = f"t-{time.time()}"
    created = s.post(url, json={"title": title}).json()["result"]
    assert len(created["id"]) == 32 and created["title"] == title
    again = s.post(url, json={"title": title})
    assert again.status_code == 400 and errors(again) == [10014]
    listed = s.get(url, params={"per_page": 1000}).json()
    assert {"id": created["id"], "title": title, "supports_url_encoding": True} in listed["result"]
    assert set(listed["result_info"]) == {"count", "page", "per_page", "total_count"}


@pytest.fixture
def namespaces(own_server):
    """(session, url of the namespace collection) on an emulator of its own, so no other test's namespaces show."""
    server = own_server()
    with requests.Session() as s:
        yield s, f"{server.base_url}/accounts/a/storage/kv/namespaces"


def test_namespace_list_order_direction_and_pages(namespaces):
    s, url = namespaces
    made = {t: s.post(url, json={"title": t}).json()["result"]["id"] for t in ["beta", "alpha", "gamma"]}
    by_id = sorted(made.values())

    def listed(**params):
        body = s.get(url, params=params).json()
        assert body["success"], body
        return [n["title"] if params.get("order") == "title" else n["id"] for n in body["result"]]

    assert listed(order="title") == ["alpha", "beta", "gamma"]
    assert listed(order="title", direction="asc") == ["alpha", "beta", "gamma"]
    assert listed(order="title", direction="desc") == ["gamma", "beta", "alpha"]
    assert listed(order="id", direction="desc") == by_id[::-1]
    assert listed() == by_id and listed(direction="desc") == by_id[::-1]
    # What wrangler asks for, paged.
    assert listed(order="title", direction="asc", per_page=2, page=2) == ["gamma"]
    assert listed(order="title", per_page=2, page=3) == []
    body = s.get(url, params={"per_page": 2, "page": 2}).json()
    assert body["result_info"] == {"count": 1, "page": 2, "per_page": 2, "total_count": 3}
    for params, code in [({"order": "size"}, 10043), ({"direction": "up"}, 10044), ({"page": 0}, 10007),
                         ({"page": "x"}, 10007), ({"per_page": 0}, 10008), ({"per_page": 1001}, 10008)]:
        response = s.get(url, params=params)
        assert response.status_code == 400 and errors(response) == [code], params


def test_namespace_rename(namespaces):
    s, url = namespaces
    first = s.post(url, json={"title": "first"}).json()["result"]["id"]
    s.post(url, json={"title": "taken"})
    r = s.put(f"{url}/{first}", json={"title": "renamed"})
    assert r.status_code == 200
    assert r.json()["result"] == {"id": first, "title": "renamed", "supports_url_encoding": True}
    assert s.get(f"{url}/{first}").json()["result"]["title"] == "renamed"
    assert sorted(n["title"] for n in s.get(url).json()["result"]) == ["renamed", "taken"]
    assert s.post(url, json={"title": "first"}).ok  # the old title is free again
    for body, code in [({"title": "taken"}, 10014), ({}, 10019), ({"title": ""}, 10019),
                       ({"title": "x" * 513}, 10029), ("not an object", 10019)]:
        r = s.put(f"{url}/{first}", json=body)
        assert r.status_code == 400 and errors(r) == [code], body
    assert s.get(f"{url}/{first}").json()["result"]["title"] == "renamed"


def test_namespace_delete_removes_its_keys_and_title(namespaces):
    s, url = namespaces
    gone = s.post(url, json={"title": "doomed"}).json()["result"]["id"]
    kept = s.post(url, json={"title": "kept"}).json()["result"]["id"]
    for ns in (gone, kept):
        assert s.put(f"{url}/{ns}/bulk", json=[{"key": f"k{i}", "value": "v"} for i in range(3)]).ok
    r = s.delete(f"{url}/{gone}")
    assert r.status_code == 200 and r.json() == {"success": True, "errors": [], "messages": [], "result": None}
    assert [n["id"] for n in s.get(url).json()["result"]] == [kept]
    assert s.get(f"{url}/{gone}/keys").json()["result"] == []
    assert s.get(f"{url}/{gone}/values/k0").status_code == 404
    assert len(s.get(f"{url}/{kept}/keys").json()["result"]) == 3
    assert s.post(url, json={"title": "doomed"}).ok  # the title can be used again


def test_auth_required(cfkv_emulator):
    url = f"{cfkv_emulator.base_url}/accounts/a/storage/kv/namespaces/n/values/k"
    assert requests.get(url).status_code == 401
    r = requests.get(url, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and errors(r) == [10000]


def test_unknown_routes_are_404(ns):
    s, base = ns
    for url in (f"{base}/nothing", base.replace("/storage/kv", "/storage/xx"), f"{base}/values"):
        r = s.get(url)
        assert r.status_code == 404 and errors(r) == [7003]


def test_fault_injection_and_ratelimit_header(ns, cfkv_emulator):
    s, base = ns
    cfkv_emulator.set_faults(rate_429=1.0, retry_after=7)
    r = s.get(f"{base}/values/k")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    cfkv_emulator.set_faults(rate_429=0.0, rate_503=1.0)
    assert s.get(f"{base}/values/k").status_code == 503
    cfkv_emulator.clear_faults()
    r = s.get(f"{base}/values/k")
    assert r.status_code == 404 and r.headers["Ratelimit"].startswith('"default";r=')


def test_connections_are_kept_alive(cfkv_emulator):
    client = cfkv_emulator.client()
    for i in range(20):
        client.put(f"k{i}", b"v")
        client.get(f"k{i}")
    assert connections_opened(client) == 1


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_command_line_serves_and_says_it_is_not_for_production(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "django_cfkv.emulator", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "Not a production server" in help_text
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "django_cfkv.emulator", "--port", str(port),
                             "--path", str(tmp_path / "kv.sqlite3"), "--token", "tok"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "127.0.0.1" in proc.stdout.readline()
        from django_cfkv.client import KVClient

        client = KVClient("a", "n", "tok", base_url=f"http://127.0.0.1:{port}/client/v4")
        client.put("k", b"v")
        assert client.get("k") == b"v"
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------ the server under abuse


@pytest.fixture
def own_server(tmp_path):
    """A server of its own, for tests that change how it runs."""
    import threading

    from django_cfkv.emulator import EmulatorApp
    from django_cfkv.emulator.server import EmulatorServer

    started = []

    def start(app=None, **attributes):
        server = EmulatorServer(("127.0.0.1", 0), app or EmulatorApp(tmp_path / "kv.sqlite3"))
        for name, value in attributes.items():
            setattr(server, name, value)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_an_idle_connection_is_closed(own_server):
    # Each connection holds a thread: one that never sends must not hold it forever.
    server = own_server(idle_timeout=0.5)
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, not by our 10 s timeout
        assert time.monotonic() - started < 5


def test_head_answers_carry_no_body(own_server):
    server = own_server()
    host, port = server.server_address[:2]
    path = "/client/v4/accounts/a/storage/kv/namespaces/n/values/k"
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("PUT", path, body=b"twelve bytes")
    assert conn.getresponse().read() == json.dumps({"success": True, "errors": [], "messages": [],
                                                    "result": None}).encode()
    for method, status in [("HEAD", 200), ("HEAD", 404)]:
        conn.request(method, path if status == 200 else path + "-missing")
        response = conn.getresponse()
        assert response.status == status and response.read() == b""
        if status == 200:
            assert response.headers["Content-Length"] == "12"
    # The same connection still frames answers right: no stray body came first.
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"twelve bytes"
    conn.close()


def test_namespace_ids_seen_are_not_kept(own_server):
    import gc

    from django_cfkv.local import LocalKV

    server = own_server()
    with requests.Session() as s:
        for i in range(200):
            url = f"{server.base_url}/accounts/a/storage/kv/namespaces/ns{i}/values/k"
            assert s.get(url).status_code == 404
    gc.collect()
    # type(), not isinstance(): the latter would evaluate Django's lazy objects.
    alive = [o for o in gc.get_objects() if type(o) is LocalKV and o.path == server.app.path]
    assert len(alive) < 10


def test_verbose_logs_one_line_per_request_without_keys_or_queries(own_server, capfd):
    server = own_server(verbose=True)
    base = f"{server.base_url}/accounts/a/storage/kv/namespaces/n"
    secret = "session:s3cr3t-id"
    with requests.Session() as s:
        s.put(f"{base}/values/{secret}", data=b"v", params={"expiration_ttl": 120})
        s.get(f"{base}/metadata/{secret}")
        s.get(f"{base}/keys", params={"prefix": secret, "cursor": "c2Vzc2lvbjpzM2NyM3QtaWQ="})
        s.get(f"{base}/values/session%3As3cr3t-id")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 4, lines
    assert ['"PUT ', '"GET ', '"GET ', '"GET '] == [line[line.index('"'):][:5] for line in lines]
    assert [line.split('" ')[1].split()[0] for line in lines] == ["200", "200", "200", "200"]
    text = "\n".join(lines)
    for leak in ("s3cr3t", "session", "c2Vzc2lvb"):
        assert leak not in text
    assert "/values/<key>" in text and "/metadata/<key>" in text and "/keys?prefix=*&cursor=*" in text


def test_clearing_faults_keeps_the_start_up_latency(own_server, tmp_path):
    from django_cfkv.emulator import EmulatorApp

    server = own_server(EmulatorApp(tmp_path / "lat.sqlite3", latency_ms=40))
    admin = server.base_url.replace("/client/v4", "/__emulator/faults")
    assert requests.post(admin, json={"latency_ms": 500, "rate_503": 0.5}).json()["result"]["latency_ms"] == 500
    cleared = requests.delete(admin).json()["result"]
    assert cleared == {**server.app.faults.FIELDS, "latency_ms": 40}
    assert requests.get(admin).json()["result"] == cleared


@pytest.mark.parametrize("error, status, code", [
    # Texts that read as another refusal: the answer follows the error's code, never its words.
    (dict(message="expiration_ttl: metadata over its limit", code=10033), 400, 10033),
    (dict(message="a value of 25 MiB of metadata", code=10034), 400, 10034),
    (dict(message="the expiration is fine", code=10047, too_large=True), 413, 10047),
    (dict(message="metadata limit expiration 25 MiB"), 400, 10029),
])
def test_store_refusals_are_answered_from_the_error_code_not_its_text(ns, monkeypatch, error, status, code):
    from django_cfkv.exceptions import KVValueError
    from django_cfkv.local import LocalKV

    def refuse(self, items):
        error_args = dict(error)
        raise KVValueError(error_args.pop("message"), **error_args)

    monkeypatch.setattr(LocalKV, "put_many", refuse)
    s, base = ns
    r = s.put(f"{base}/bulk", json=[{"key": "a", "value": "1"}])
    assert r.status_code == status and errors(r) == [code]


def test_the_store_names_each_refusal_with_cloudflares_code(tmp_path):
    from django_cfkv import limits
    from django_cfkv.exceptions import KVValueError
    from django_cfkv.local import LocalKV

    kv = LocalKV(tmp_path / "kv.sqlite3")
    cases = [
        (lambda: kv.put("k", b"v", expiration_ttl=30), limits.INVALID_EXPIRATION_TTL, False),
        (lambda: kv.put("k", b"v", expiration=1), limits.INVALID_EXPIRATION, False),
        (lambda: kv.put("k", b"v", metadata={"x": "y" * 2000}), limits.INVALID_METADATA, True),
        (lambda: kv.put("k", b"v", metadata={"x": float("nan")}), limits.INVALID_METADATA, False),
        (lambda: kv.put("k", b"v" * (limits.MAX_VALUE_BYTES + 1)), limits.PAYLOAD_TOO_LARGE, True),
        (lambda: kv.put("k" * 513, b"v"), limits.KEY_TOO_LONG, True),
        (lambda: kv.put("..", b"v"), limits.INVALID_KEY, False),
        (lambda: kv.list_keys(limit=5), limits.INVALID_LIST_LIMIT, False),
        (lambda: kv.list_keys(cursor="é"), limits.INVALID_CURSOR, False),
    ]
    for call, code, too_large in cases:
        with pytest.raises(KVValueError) as caught:
            call()
        assert (caught.value.code, caught.value.too_large) == (code, too_large), caught.value
