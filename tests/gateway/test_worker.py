"""The Worker gateway (django_cfkv/gateway/worker.js) under Miniflare, over plain HTTP.

Requests follow Cloudflare's documented wire format, so what passes here is
what a REST client (ours, or the official SDK) sees. The gateway runs through
tests/gateway/counting-shim.mjs, which counts KV operations per invocation
and fails any invocation past 1,000.

Needs `npm ci --prefix tests/gateway`; a missing install fails, never skips.
"""

import base64
import json
import pathlib
import socket
import subprocess
import threading
import time
from http.client import HTTPResponse
from urllib.parse import quote

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from django_cfkv import gateway as gateway_pkg
from tests.gateway.server import GATEWAY_DIR, GatewayServer

FAIL_PREFIX = "__fail__/"
FAIL_CHUNK = "__failchunk__"


@pytest.fixture(scope="module")
def gw():
    server = GatewayServer(
        extra_worker=GATEWAY_DIR / "session-worker.mjs",
        extra_binding="SESSIONS",
        fail_key_prefix=FAIL_PREFIX,
        fail_chunk_marker=FAIL_CHUNK,
    )
    with server:
        yield server


@pytest.fixture()
def http():
    # A connection per request: Miniflare closes a connection whose request
    # body the Worker did not read (a refused request), without saying so, and
    # a pooled connection reused after that fails with "connection reset". On
    # Cloudflare the client's connection ends at the edge, not at the Worker.
    # Under load the local runtime still resets the odd fresh connection before
    # answering; like KVClient, the session sends such a request again (every
    # request here is safe to repeat): these tests judge answers, not sockets.
    retry = Retry(total=3, connect=3, read=3, status=0, other=0, allowed_methods=None,
                  raise_on_status=False, backoff_factor=0.05)
    with requests.Session() as session:
        session.headers["Connection"] = "close"
        session.mount("http://", HTTPAdapter(max_retries=retry))
        yield session


def url(gw, path):
    return gw.namespace_url + path


def vurl(gw, key):
    return url(gw, "/values/" + quote(key, safe=""))


def errors(response):
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert body["messages"] == []
    return [e["code"] for e in body["errors"]]


def ok_result(response):
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["errors"] == [], body
    return body["result"]


# ---------------------------------------------------------------- health, auth


def test_health(gw, http):
    result = ok_result(http.get(gw.url + "/__cfkv/health", headers=gw.headers()))
    assert result["service"] == "django-cfkv-gateway"
    assert result["namespace_id"] == gw.namespace_id
    assert result["version"]
    assert ok_result(http.get(gw.url + "/__cfkv/health", headers=gw.headers(gw.read_token))) == result
    assert http.get(gw.url + "/__cfkv/health").status_code == 401


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ({"Authorization": "Bearer"}, 401),
    ({"Authorization": "Bearer wrong-token"}, 403),
])
def test_refused_before_any_kv_operation(gw, http, headers, status):
    ok_result(http.put(vurl(gw, "auth-probe"), data=b"original", headers=gw.headers()))
    for method, path, kwargs in [
        ("GET", "/values/auth-probe", {}),
        ("PUT", "/values/auth-probe", {"data": b"changed"}),
        ("DELETE", "/values/auth-probe", {}),
        ("GET", "/metadata/auth-probe", {}),
        ("GET", "/keys", {}),
        ("POST", "/bulk/get", {"json": {"keys": ["auth-probe"]}}),
        ("PUT", "/bulk", {"json": [{"key": "auth-probe", "value": "changed"}]}),
        ("POST", "/bulk/delete", {"json": ["auth-probe"]}),
        ("DELETE", "/bulk", {"json": ["auth-probe"]}),
    ]:
        response = http.request(method, url(gw, path), headers=headers, **kwargs)
        assert response.status_code == status, (method, path)
        assert errors(response) == [10000]
        assert response.json()["errors"][0]["message"] == "Authentication error"
        # It says who refused (RFC 6750), so a client names the gateway's secrets.
        assert response.headers["www-authenticate"] == (
            'Bearer realm="django-cfkv-gateway"' + (', error="invalid_token"' if status == 403 else ""))
        assert response.headers["x-test-kv-ops"] == "0"
        assert "access-control-allow-origin" not in response.headers
    assert http.get(vurl(gw, "auth-probe"), headers=gw.headers()).content == b"original"


def test_read_token_reads_but_cannot_write(gw, http):
    read = gw.headers(gw.read_token)
    ok_result(http.put(vurl(gw, "ro-key"), data=b"v1", headers=gw.headers()))
    assert http.get(vurl(gw, "ro-key"), headers=read).content == b"v1"
    ok_result(http.get(url(gw, "/keys"), headers=read))
    ok_result(http.post(url(gw, "/bulk/get"), json={"keys": ["ro-key"]}, headers=read))
    for method, path, kwargs in [
        ("PUT", "/values/ro-key", {"data": b"v2"}),
        ("PUT", "/values/ro-key", {"files": {"value": (None, "v2"), "metadata": (None, "{}")}}),
        ("DELETE", "/values/ro-key", {}),
        ("PUT", "/bulk", {"json": [{"key": "ro-key", "value": "v2"}]}),
        ("POST", "/bulk/delete", {"json": ["ro-key"]}),
        ("DELETE", "/bulk", {"json": ["ro-key"]}),
    ]:
        response = http.request(method, url(gw, path), headers=read, **kwargs)
        assert response.status_code == 403, (method, path)
        assert errors(response) == [10000]
        assert response.headers["www-authenticate"] == 'Bearer realm="django-cfkv-gateway", error="insufficient_scope"'
        assert response.headers["x-test-kv-ops"] == "0"
    response = http.post(gw.url + "/__cfkv/internal/bulk", json={"op": "delete", "items": ["ro-key"]},
                         headers=read)
    assert response.status_code == 403
    assert http.get(vurl(gw, "ro-key"), headers=read).content == b"v1"


def test_other_namespace_and_unknown_routes(gw, http):
    other = f"{gw.base_url}/accounts/{gw.account_id}/storage/kv/namespaces/{'f' * 32}/values/k"
    response = http.get(other, headers=gw.headers())
    assert response.status_code == 404 and errors(response) == [10013]
    for path in ["/", "/client/v4", "/client/v4/zones", url(gw, "/nope")[len(gw.url):],
                 url(gw, "/values")[len(gw.url):], url(gw, "/values/a/b")[len(gw.url):]]:
        response = http.get(gw.url + path, headers=gw.headers())
        assert response.status_code == 404, path
        assert errors(response) == [7003]
        assert response.json()["errors"][0]["message"] == "No route for the URI"
    # A known path with a method it does not serve.
    response = http.post(vurl(gw, "k"), data=b"x", headers=gw.headers())
    assert response.status_code == 404 and errors(response) == [7003]


def test_any_account_id_is_accepted(gw, http):
    ok_result(http.put(vurl(gw, "acct"), data=b"1", headers=gw.headers()))
    other = gw.namespace_url.replace(gw.account_id, "someone-else")
    assert http.get(other + "/values/acct", headers=gw.headers()).content == b"1"


def test_namespace_list_pages_end(gw, http):
    # Clients page until an empty page (the official SDKs) or a short one
    # (wrangler): page 2 and beyond must be empty, or they ask forever.
    namespaces = gw.base_url + f"/accounts/{gw.account_id}/storage/kv/namespaces"
    info = {"id": gw.namespace_id, "title": "django-cfkv-gateway", "supports_url_encoding": True}
    body = http.get(namespaces, headers=gw.headers()).json()
    assert body["result"] == [info]
    assert body["result_info"] == {"count": 1, "page": 1, "per_page": 20, "total_count": 1}
    params = {"page": 2, "per_page": 100, "order": "title", "direction": "asc"}  # what wrangler sends
    body = http.get(namespaces, params=params, headers=gw.headers(gw.read_token)).json()
    assert body["success"] and body["result"] == []
    assert body["result_info"] == {"count": 0, "page": 2, "per_page": 100, "total_count": 1}
    for params, code in [({"page": 0}, 10007), ({"page": "two"}, 10007), ({"per_page": 0}, 10008),
                         ({"per_page": 1001}, 10008), ({"order": "size"}, 10043),
                         ({"direction": "up"}, 10044)]:
        response = http.get(namespaces, params=params, headers=gw.headers())
        assert response.status_code == 400 and errors(response) == [code], params


# ------------------------------------------------------------------- values


@pytest.mark.parametrize("key", ["plain", "a/b/c", "sp ace+plus", "q?x=1&y#frag", "100%", "ключ-🔑",
                                 "session:abc"])
def test_raw_put_get_delete_roundtrip(gw, http, key):
    value = bytes(range(256)) * 3
    assert ok_result(http.put(vurl(gw, key), data=value, headers=gw.headers())) is None
    response = http.get(vurl(gw, key), headers=gw.headers())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == value
    assert response.headers["x-test-kv-ops"] == "1"
    listed = ok_result(http.get(url(gw, "/keys"), params={"prefix": key}, headers=gw.headers()))
    names = [k["name"] for k in listed]
    assert key in names
    assert ok_result(http.delete(vurl(gw, key), headers=gw.headers())) is None
    response = http.get(vurl(gw, key), headers=gw.headers())
    assert response.status_code == 404
    missing = {"code": 10009, "message": "get: 'key not found'"}
    assert response.json() == {"success": False, "errors": [missing], "messages": [], "result": None}


def test_delete_missing_key_succeeds(gw, http):
    assert ok_result(http.delete(vurl(gw, "never-existed"), headers=gw.headers())) is None


def test_multipart_put_with_metadata(gw, http):
    value = b"\x00\xff\xfe binary \r\n--not-a-boundary\r\n"
    files = {"value": (None, value, "application/octet-stream"),
             "metadata": (None, json.dumps({"kind": "mp", "n": 1}), "application/json")}
    ok_result(http.put(vurl(gw, "mp"), files=files, headers=gw.headers()))
    assert http.get(vurl(gw, "mp"), headers=gw.headers()).content == value
    assert ok_result(http.get(url(gw, "/metadata/mp"), headers=gw.headers())) == {"kind": "mp", "n": 1}
    listed = ok_result(http.get(url(gw, "/keys"), params={"prefix": "mp"}, headers=gw.headers()))
    assert listed == [{"name": "mp", "metadata": {"kind": "mp", "n": 1}}]


def test_multipart_put_value_only_and_curl_style_form(gw, http):
    ok_result(http.put(vurl(gw, "mp2"), files={"value": (None, "Some Value")}, headers=gw.headers()))
    assert http.get(vurl(gw, "mp2"), headers=gw.headers()).content == b"Some Value"
    assert ok_result(http.get(url(gw, "/metadata/mp2"), headers=gw.headers())) is None
    # curl --form 'value=...' --form 'metadata={...}' (filename-less text parts)
    ok_result(http.put(vurl(gw, "mp3"), files={"value": (None, "v"), "metadata": (None, '{"a": [1, 2]}')},
                       headers=gw.headers()))
    assert ok_result(http.get(url(gw, "/metadata/mp3"), headers=gw.headers())) == {"a": [1, 2]}
    response = http.put(vurl(gw, "mp4"), files={"metadata": (None, "{}")}, headers=gw.headers())
    assert response.status_code == 400 and errors(response) == [10012]
    response = http.put(vurl(gw, "mp4"), files={"value": (None, "v"), "metadata": (None, "{not json")},
                        headers=gw.headers())
    assert response.status_code == 400 and errors(response) == [10047]


def test_metadata_of_missing_key(gw, http):
    response = http.get(url(gw, "/metadata/missing-meta"), headers=gw.headers())
    assert response.status_code == 404 and errors(response) == [10009]


def test_expiration_rules(gw, http):
    h = gw.headers()
    response = http.put(vurl(gw, "exp"), data=b"x", params={"expiration_ttl": 59}, headers=h)
    assert response.status_code == 400 and errors(response) == [10034]
    response = http.put(vurl(gw, "exp"), data=b"x", params={"expiration_ttl": "soon"}, headers=h)
    assert response.status_code == 400 and errors(response) == [10034]
    response = http.put(vurl(gw, "exp"), data=b"x", params={"expiration": int(time.time()) + 30}, headers=h)
    assert response.status_code == 400 and errors(response) == [10033]
    assert http.get(vurl(gw, "exp"), headers=h).status_code == 404  # nothing written

    before = int(time.time())
    ok_result(http.put(vurl(gw, "exp-ttl"), data=b"x", params={"expiration_ttl": 60}, headers=h))
    target = before + 3600
    ok_result(http.put(vurl(gw, "exp-abs"), data=b"x", params={"expiration": target}, headers=h))
    # both: expiration_ttl wins, expiration is ignored (even an invalid one)
    ok_result(http.put(vurl(gw, "exp-both"), data=b"x", params={"expiration_ttl": 120, "expiration": 5},
                       headers=h))
    page = ok_result(http.get(url(gw, "/keys"), params={"prefix": "exp-"}, headers=h))
    listed = {k["name"]: k for k in page}
    assert before + 60 <= listed["exp-ttl"]["expiration"] <= int(time.time()) + 61
    assert listed["exp-abs"]["expiration"] == target
    assert before + 120 <= listed["exp-both"]["expiration"] <= int(time.time()) + 121
    # The value read does not carry the expiration header (see worker.js).
    assert http.get(vurl(gw, "exp-abs"), headers=h).content == b"x"


def test_size_limits(gw, http):
    h = gw.headers()
    big = b"x" * (25 * 1024 * 1024 + 1)
    response = http.put(vurl(gw, "big"), data=big, headers=h)
    assert response.status_code == 413 and errors(response) == [10024]
    assert http.get(vurl(gw, "big"), headers=h).status_code == 404
    meta = json.dumps({"m": "x" * 1020})  # > 1024 bytes serialized
    response = http.put(vurl(gw, "meta"), files={"value": (None, "v"), "metadata": (None, meta)}, headers=h)
    assert response.status_code == 413 and errors(response) == [10047]
    ok_meta = json.dumps({"m": "x" * 1000})
    files = {"value": (None, "v"), "metadata": (None, ok_meta)}
    ok_result(http.put(vurl(gw, "meta"), files=files, headers=h))


def _send_chunked(gw, method, path, headers, total, chunk=64 * 1024):
    """Send a chunked body of ``total`` bytes from a thread while reading the answer.

    Returns (status, headers, body bytes, bytes sent when the answer began).
    Sending stops once the answer is in: a server that stopped reading would
    otherwise leave the sender blocked on a full socket.
    """
    host, port = gw.url.split("//", 1)[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked",
            "Content-Type: application/json", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent, answered = [0], threading.Event()
    piece = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"

    def send():
        try:
            while sent[0] < total and not answered.is_set():
                sock.sendall(piece)
                sent[0] += chunk
            if not answered.is_set():
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection after answering
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    response = HTTPResponse(sock, method=method)
    try:
        response.begin()
        sent_when_answered = sent[0]
        body = response.read()
    finally:
        answered.set()
        sock.close()
        sender.join(10)
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body, sent_when_answered


@pytest.mark.parametrize("token, method, path, limit", [
    ("read", "POST", "/bulk/get", 1024 * 1024),                  # the read token's only body
    ("write", "PUT", "/values/chunked-big", 25 * 1024 * 1024),  # one value
])
def test_chunked_body_over_the_limit_is_refused_without_reading_it(gw, http, token, method, path, limit):
    # A chunked body declares no length: the gateway must count what it reads
    # and stop at the route's limit, not buffer 48 MiB and then refuse it.
    total = 48 * 1024 * 1024
    headers = {**gw.headers(gw.read_token if token == "read" else gw.token), "x-test-count-body": "1"}
    status, answer_headers, body, sent_when_answered = _send_chunked(
        gw, method, gw.namespace_url[len(gw.url):] + path, headers, total)
    assert status == 413, body
    assert json.loads(body)["errors"][0]["code"] == 10024
    # The Worker pulled no more than the limit and the chunk that passed it...
    assert limit < int(answer_headers["x-test-body-read"]) <= limit + 64 * 1024
    # ...and the client had its answer long before it finished sending (what
    # it sent past the limit sat in socket buffers and Miniflare's proxy).
    assert sent_when_answered < limit + (total - limit) / 2
    if method == "PUT":
        assert http.get(vurl(gw, "chunked-big"), headers=gw.headers()).status_code == 404


def test_key_rules(gw, http):
    h = gw.headers()
    longest = "é" * 256  # 512 UTF-8 bytes
    ok_result(http.put(vurl(gw, longest), data=b"1", headers=h))
    assert http.get(vurl(gw, longest), headers=h).content == b"1"
    response = http.put(vurl(gw, longest + "x"), data=b"1", headers=h)
    assert response.status_code == 414 and errors(response) == [10030]
    response = http.get(url(gw, "/values/%FF"), headers=h)  # not UTF-8 once decoded
    assert response.status_code == 400 and errors(response) == [10042]
    # URL parsing removes dot segments before the Worker sees them: "." arrives
    # as an empty key (refused), ".." as the namespace path (no such route).
    response = http.put(url(gw, "/values/%2E"), data=b"1", headers=h)
    assert response.status_code == 400 and errors(response) == [10042]
    response = http.put(url(gw, "/values/%2E%2E"), data=b"1", headers=h)
    assert response.status_code == 404 and errors(response) == [7003]
    for bad in [".", ".."]:
        response = http.post(url(gw, "/bulk/get"), json={"keys": [bad]}, headers=h)
        assert response.status_code == 400 and errors(response) == [10042]
    response = http.post(url(gw, "/bulk/get"), json={"keys": [longest + "x"]}, headers=h)
    assert response.status_code == 414 and errors(response) == [10030]


# --------------------------------------------------------------------- list


def test_list_limit_validation(gw, http):
    for limit in [9, 1001, 0, "ten", 10.5]:
        response = http.get(url(gw, "/keys"), params={"limit": limit}, headers=gw.headers())
        assert response.status_code == 400, limit
        assert errors(response) == [10028]


def test_list_paging(gw, http):
    h = gw.headers()
    items = [{"key": f"page/{i:03d}", "value": str(i)} for i in range(25)]
    assert ok_result(http.put(url(gw, "/bulk"), json=items, headers=h))["unsuccessful_keys"] == []
    seen, cursor, pages = [], None, 0
    while True:
        params = {"prefix": "page/", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = http.get(url(gw, "/keys"), params=params, headers=h).json()
        assert body["success"]
        assert body["result_info"]["count"] == len(body["result"])
        seen += [k["name"] for k in body["result"]]
        pages += 1
        cursor = body["result_info"]["cursor"]
        assert isinstance(cursor, str)
        if cursor == "":
            break
    assert pages == 3
    assert seen == sorted(i["key"] for i in items)


# --------------------------------------------------------------------- bulk


def test_bulk_get(gw, http):
    h = gw.headers()
    ok_result(http.put(url(gw, "/bulk"), json=[
        {"key": "bg/text", "value": "hello", "metadata": {"m": 1}},
        {"key": "bg/json", "value": '{"a": 1}'},
    ], headers=h))
    response = http.post(url(gw, "/bulk/get"), json={"keys": ["bg/text", "bg/json", "bg/none"]}, headers=h)
    assert ok_result(response) == {"values": {"bg/text": "hello", "bg/json": '{"a": 1}', "bg/none": None}}
    assert response.headers["x-test-kv-ops"] == "1"
    result = ok_result(http.post(url(gw, "/bulk/get"), json={"keys": ["bg/json"], "type": "json"}, headers=h))
    assert result == {"values": {"bg/json": {"a": 1}}}
    body = {"keys": ["bg/text", "bg/none"], "withMetadata": True}
    result = ok_result(http.post(url(gw, "/bulk/get"), json=body, headers=h))
    assert result == {"values": {"bg/text": {"value": "hello", "metadata": {"m": 1}}, "bg/none": None}}
    keys = [f"bg/many/{i}" for i in range(100)]
    response = http.post(url(gw, "/bulk/get"), json={"keys": keys}, headers=h)
    assert len(ok_result(response)["values"]) == 100
    assert response.headers["x-test-kv-ops"] == "1"
    for body in [{"keys": keys + ["one-more"]}, {"keys": "bg/text"}, {"keys": ["bg/text"], "type": "stream"},
                 {"keys": ["bg/text"], "withMetadata": "yes"}, ["bg/text"]]:
        response = http.post(url(gw, "/bulk/get"), json=body, headers=h)
        assert response.status_code == 400, body
        assert errors(response) == [10029]
    response = http.post(url(gw, "/bulk/get"), data=b"{nope", headers=h)
    assert response.status_code == 400 and errors(response) == [10029]


def test_bulk_write_items(gw, http):
    h = gw.headers()
    raw = bytes(range(256))
    result = ok_result(http.put(url(gw, "/bulk"), json=[
        {"key": "bw/plain", "value": "text"},
        {"key": "bw/b64", "value": base64.b64encode(raw).decode(), "base64": True},
        {"key": "bw/ttl", "value": "t", "expiration_ttl": 300, "metadata": {"x": True}},
        {"key": "bw/dup", "value": "first"},
        {"key": "bw/dup", "value": "last"},
    ], headers=h))
    assert result == {"successful_key_count": 5, "unsuccessful_keys": []}
    assert http.get(vurl(gw, "bw/b64"), headers=h).content == raw
    assert http.get(vurl(gw, "bw/dup"), headers=h).content == b"last"
    assert ok_result(http.get(url(gw, "/metadata/bw%2Fttl"), headers=h)) == {"x": True}
    malformed = [{"key": "x", "value": "y"}, [{"value": "no key"}], ["just a string"],
                 [{"key": 5, "value": "v"}]]
    for body in malformed:
        response = http.put(url(gw, "/bulk"), json=body, headers=h)
        assert response.status_code == 400 and errors(response) == [10029], body
    too_many = [{"key": f"k{i}", "value": "v"} for i in range(10001)]
    response = http.put(url(gw, "/bulk"), json=too_many, headers=h)
    assert response.status_code == 413 and errors(response) == [10024]
    assert http.get(vurl(gw, "k0"), headers=h).status_code == 404


def test_bulk_partial_failure_reports_unsuccessful_keys(gw, http):
    h = gw.headers()
    items = [
        {"key": "pf/good-1", "value": "1"},
        {"key": "..", "value": "illegal name"},
        {"key": "pf/" + "x" * 600, "value": "key too long"},
        {"key": "pf/short-ttl", "value": "v", "expiration_ttl": 10},
        {"key": "pf/past", "value": "v", "expiration": 1000},
        {"key": "pf/bad-b64", "value": "***", "base64": True},
        {"key": "pf/big-meta", "value": "v", "metadata": {"m": "x" * 2000}},
        {"key": "pf/not-a-string", "value": {"nested": 1}},
        {"key": FAIL_PREFIX + "kv-error", "value": "the binding throws"},
        {"key": "pf/good-2", "value": "2"},
    ]
    response = http.put(url(gw, "/bulk"), json=items, headers=h)
    result = ok_result(response)
    bad = [i["key"] for i in items[1:-1]]
    assert sorted(result["unsuccessful_keys"]) == sorted(bad)
    assert result["successful_key_count"] == 2
    codes = {m["code"] for m in response.json()["messages"]}
    assert {10042, 10030, 10034, 10033, 10047} <= codes
    assert http.get(vurl(gw, "pf/good-1"), headers=h).content == b"1"
    assert http.get(vurl(gw, "pf/good-2"), headers=h).content == b"2"
    assert http.get(vurl(gw, "pf/short-ttl"), headers=h).status_code == 404

    result = ok_result(http.post(url(gw, "/bulk/delete"),
                                 json=["pf/good-1", FAIL_PREFIX + "x", "..", "pf/good-2"], headers=h))
    assert sorted(result["unsuccessful_keys"]) == sorted([FAIL_PREFIX + "x", ".."])
    assert result["successful_key_count"] == 2
    assert http.get(vurl(gw, "pf/good-1"), headers=h).status_code == 404


def _max_ops(stats):
    assert not stats["exceeded"], stats
    return stats["max_ops"]


def test_bulk_write_and_delete_10000_stay_under_1000_ops_per_invocation(gw, http):
    h = gw.headers()
    items = [{"key": f"big/{i:05d}", "value": f"value-{i}", "metadata": {"i": i}} for i in range(10000)]
    gw.reset_stats()
    response = http.put(url(gw, "/bulk"), json=items, headers=h, timeout=300)
    assert ok_result(response) == {"successful_key_count": 10000, "unsuccessful_keys": []}
    assert response.headers["x-test-kv-ops"] == "0"  # the parent only fans out
    stats = gw.stats()
    assert 0 < _max_ops(stats) <= 1000
    chunks = [i for i in stats["invocations"] if i["path"] == "/__cfkv/internal/bulk"]
    assert len(chunks) >= 10 and sum(i["ops"] for i in chunks) == 10000

    sample = [f"big/{i:05d}" for i in range(0, 10000, 100)]
    values = ok_result(http.post(url(gw, "/bulk/get"), json={"keys": sample}, headers=h))["values"]
    assert values == {k: f"value-{int(k[4:])}" for k in sample}
    count, cursor = 0, None
    while True:
        body = http.get(url(gw, "/keys"), params={"prefix": "big/", **({"cursor": cursor} if cursor else {})},
                        headers=h).json()
        count += body["result_info"]["count"]
        cursor = body["result_info"]["cursor"]
        if not cursor:
            break
    assert count == 10000

    gw.reset_stats()
    keys = [i["key"] for i in items]
    response = http.post(url(gw, "/bulk/delete"), json=keys, headers=h, timeout=300)
    assert ok_result(response) == {"successful_key_count": 10000, "unsuccessful_keys": []}
    assert 0 < _max_ops(gw.stats()) <= 1000
    assert ok_result(http.get(url(gw, "/keys"), params={"prefix": "big/"}, headers=h)) == []


def test_deprecated_bulk_delete_fans_out_too(gw, http):
    h = gw.headers()
    keys = [f"dep/{i:04d}" for i in range(1500)]
    ok_result(http.put(url(gw, "/bulk"), json=[{"key": k, "value": "v"} for k in keys], headers=h))
    gw.reset_stats()
    result = ok_result(http.delete(url(gw, "/bulk"), json=keys, headers=h))
    assert result == {"successful_key_count": 1500, "unsuccessful_keys": []}
    assert 0 < _max_ops(gw.stats()) <= 1000
    assert ok_result(http.get(url(gw, "/keys"), params={"prefix": "dep/"}, headers=h)) == []


def test_failed_sub_invocation_surfaces_its_whole_chunk(gw, http):
    h = gw.headers()
    items = [{"key": f"fc/{i:04d}", "value": "v"} for i in range(1200)]
    items[700]["value"] = FAIL_CHUNK  # its chunk's sub-invocation fails as a whole
    result = ok_result(http.put(url(gw, "/bulk"), json=items, headers=h))
    failed = set(result["unsuccessful_keys"])
    assert "fc/0700" in failed
    assert len(failed) == 500 and result["successful_key_count"] == 700
    written = {k["name"] for k in ok_result(http.get(url(gw, "/keys"), params={"prefix": "fc/"}, headers=h))}
    assert written.isdisjoint(failed)
    assert len(written) == 700


def test_counting_shim_fails_past_1000_operations(gw, http):
    response = http.get(gw.url + "/__cfkv_test/loop", params={"n": 1000})
    assert response.status_code == 200 and response.json()["ops"] == 1000
    response = http.get(gw.url + "/__cfkv_test/loop", params={"n": 1001})
    assert response.status_code == 500
    assert response.json()["exceeded"] is True
    assert "1001 KV operations > 1000" in response.json()["error"]


def test_internal_route_refuses_oversized_chunks(gw, http):
    items = [f"ic/{i}" for i in range(1001)]
    response = http.post(gw.url + "/__cfkv/internal/bulk", json={"op": "delete", "items": items},
                         headers=gw.headers())
    assert response.status_code == 400 and errors(response) == [10029]
    assert response.headers["x-test-kv-ops"] == "0"


# --------------------------------------------------- configuration variants


@pytest.fixture(scope="module")
def rotating():
    """A gateway without the SELF binding, halfway through rotating both of its tokens."""
    with GatewayServer(self_binding=False, previous_token="old-token", previous_read_token="old-read-token") as server:
        yield server


def test_without_self_binding_large_bulks_refuse_and_rotation_token_works(rotating):
    server = rotating
    with requests.Session() as http:
        h = server.headers()
        items = [{"key": f"n/{i}", "value": "v"} for i in range(501)]
        response = http.put(url(server, "/bulk"), json=items, headers=h)
        assert response.status_code == 500 and errors(response) == [10001]
        assert "SELF" in response.json()["errors"][0]["message"]
        assert response.headers["x-test-kv-ops"] == "0"
        ok_result(http.put(url(server, "/bulk"), json=items[:500], headers=h))
        # Token rotation: the previous token keeps working until it is removed.
        assert http.get(vurl(server, "n/1"), headers=server.headers("old-token")).content == b"v"
        assert http.get(vurl(server, "n/1"), headers=server.headers("older-token")).status_code == 403


def test_previous_read_token_reads_but_cannot_write(rotating, http):
    # While the read token is rotated, the one being replaced keeps reading, and only reading:
    # a reporting job's old secret must never become a writer's.
    old, new = rotating.headers("old-read-token"), rotating.headers(rotating.read_token)
    ok_result(http.put(vurl(rotating, "rot/k"), data=b"v1", headers=rotating.headers()))
    for headers in (old, new):
        assert http.get(vurl(rotating, "rot/k"), headers=headers).content == b"v1"
        assert ok_result(http.get(url(rotating, "/metadata/rot%2Fk"), headers=headers)) is None
        listed = ok_result(http.get(url(rotating, "/keys"), params={"prefix": "rot/"}, headers=headers))
        assert [k["name"] for k in listed] == ["rot/k"]
        assert ok_result(http.post(url(rotating, "/bulk/get"), json={"keys": ["rot/k"]},
                                   headers=headers)) == {"values": {"rot/k": "v1"}}
    for method, path, kwargs in [
        ("PUT", "/values/rot%2Fk", {"data": b"v2"}),
        ("PUT", "/values/rot%2Fk", {"files": {"value": (None, "v2"), "metadata": (None, "{}")}}),
        ("DELETE", "/values/rot%2Fk", {}),
        ("PUT", "/bulk", {"json": [{"key": "rot/k", "value": "v2"}]}),
        ("POST", "/bulk/delete", {"json": ["rot/k"]}),
        ("DELETE", "/bulk", {"json": ["rot/k"]}),
    ]:
        response = http.request(method, url(rotating, path), headers=old, **kwargs)
        assert response.status_code == 403, (method, path)
        assert errors(response) == [10000]
        assert response.headers["www-authenticate"] == (
            'Bearer realm="django-cfkv-gateway", error="insufficient_scope"')
        assert response.headers["x-test-kv-ops"] == "0"
    response = http.post(rotating.url + "/__cfkv/internal/bulk", json={"op": "delete", "items": ["rot/k"]},
                         headers=old)
    assert response.status_code == 403
    assert http.get(vurl(rotating, "rot/k"), headers=new).content == b"v1"
    assert http.get(vurl(rotating, "rot/k"), headers=rotating.headers("older-read-token")).status_code == 403


def test_unconfigured_gateway_refuses_everything():
    with GatewayServer(token="", read_token="") as server:
        response = requests.get(vurl(server, "k"), headers={"Authorization": "Bearer anything"})
        assert response.status_code == 500 and errors(response) == [10001]


# ------------------------------------------------------- a Worker beside it


def test_user_worker_shares_the_namespace(gw, http):
    assert gw.extra_url
    made = http.post(gw.extra_url + "/sessions", json={"userId": 7, "email": "a@example.com"}).json()
    key = made["key"]  # "session:" + the SHA-256 of the id, as Django derives it
    session = json.loads(http.get(vurl(gw, key), headers=gw.headers()).content)
    assert session["userId"] == 7 and session["email"] == "a@example.com"
    session["email"] = "b@example.com"
    ok_result(http.put(vurl(gw, key), data=json.dumps(session), params={"expiration_ttl": 3600},
                       headers=gw.headers()))
    assert http.get(f"{gw.extra_url}/sessions/{made['id']}").json()["email"] == "b@example.com"


# ------------------------------------------------------------- KVClient


@pytest.fixture()
def client(gw):
    from django_cfkv.client import KVClient

    kv = KVClient(gw.account_id, gw.namespace_id, gw.token, base_url=gw.base_url, timeout=30, max_retries=0)
    yield kv
    kv.close()


def test_kvclient_through_the_gateway(gw, client):
    client.put("c/one", b"\x00\x01binary")
    assert client.get("c/one") == b"\x00\x01binary"
    assert client.get("c/missing") is None
    client.put("c/meta", "text", metadata={"tag": "t"}, expiration_ttl=600)
    found = client.get_with_metadata("c/meta")
    assert found[0] == b"text" and found[1] == {"tag": "t"}
    client.put_many([{"key": f"c/many/{i}", "value": f"v{i}"} for i in range(1200)])
    found_many = client.get_many(["c/many/0", "c/many/1199", "c/nope"])
    assert found_many == {"c/many/0": b"v0", "c/many/1199": b"v1199"}
    assert len(list(client.iter_keys(prefix="c/many/"))) == 1200
    page = client.list_keys(prefix="c/many/", limit=10)
    assert len(page.keys) == 10 and page.cursor
    client.delete_many([f"c/many/{i}" for i in range(1200)])
    assert list(client.iter_keys(prefix="c/many/")) == []
    client.delete("c/one")
    assert client.get("c/one") is None


def test_kvclient_errors_through_the_gateway(gw):
    from django_cfkv.client import KVClient
    from django_cfkv.exceptions import KVAuthError, KVBulkError

    # The advice names the gateway's secrets, not a Cloudflare API token's permission.
    reader = KVClient(gw.account_id, gw.namespace_id, gw.read_token, base_url=gw.base_url, max_retries=0)
    with pytest.raises(KVAuthError) as info:
        reader.put("c/ro", b"x")
    assert "read-only token" in str(info.value) and "CFKV_GATEWAY_TOKEN secret" in str(info.value)
    assert "Workers KV Storage" not in str(info.value)
    reader.close()
    stranger = KVClient(gw.account_id, gw.namespace_id, "not-the-token", base_url=gw.base_url, max_retries=0)
    with pytest.raises(KVAuthError) as info:
        stranger.get("c/ok")
    assert "CFKV_GATEWAY_TOKEN secret" in str(info.value) and "CFKV_GATEWAY_READ_TOKEN" in str(info.value)
    assert "Workers KV Storage" not in str(info.value) and "not-the-token" not in str(info.value)
    stranger.close()
    writer = KVClient(gw.account_id, gw.namespace_id, gw.token, base_url=gw.base_url, max_retries=0)
    with pytest.raises(KVBulkError) as info:
        writer.put_many([{"key": "c/ok", "value": "1"}, {"key": FAIL_PREFIX + "c", "value": "2"}])
    assert list(info.value.keys) == [FAIL_PREFIX + "c"]
    assert writer.get("c/ok") == b"1"
    writer.close()


def test_ping_with_a_wrong_gateway_token_names_the_gateway_secrets(gw, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.CFKV = {"default": {**gw.settings(), "API_TOKEN": "not-the-token", "MAX_RETRIES": 0}}
    with pytest.raises(CommandError) as info:
        call_command("cfkv", "ping")
    assert "django-cfkv gateway refused the token" in str(info.value)
    assert "CFKV_GATEWAY_TOKEN" in str(info.value) and "Workers KV Storage" not in str(info.value)


def test_cloudflare_s_own_refusal_still_names_the_api_token_permission(cfkv_emulator):
    from django_cfkv.client import KVClient
    from django_cfkv.exceptions import KVAuthError

    client = KVClient(cfkv_emulator.account_id, "n", "wrong", base_url=cfkv_emulator.base_url, max_retries=0)
    with pytest.raises(KVAuthError, match="Workers KV Storage") as info:
        client.get("k")
    assert "gateway" not in str(info.value)
    client.close()


# ------------------------------------------------------------ write_project


def test_write_project(tmp_path):
    target = tmp_path / "gw"
    paths = gateway_pkg.write_project(target, namespace_id="0123456789abcdef0123456789abcdef", name="my-gw")
    assert [p.name for p in paths] == ["worker.js", "wrangler.toml", "package.json", ".gitignore"]
    assert (target / "worker.js").read_text() == (gateway_pkg.pathlib.Path(gateway_pkg.__file__).parent
                                                  / "worker.js").read_text()
    toml = (target / "wrangler.toml").read_text()
    for line in ['name = "my-gw"', 'main = "worker.js"', 'binding = "KV"',
                 'id = "0123456789abcdef0123456789abcdef"',
                 'CFKV_NAMESPACE_ID = "0123456789abcdef0123456789abcdef"', 'binding = "SELF"',
                 'service = "my-gw"', "compatibility_date = "]:
        assert line in toml
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = None
    if tomllib:
        parsed = tomllib.loads(toml)
        assert parsed["kv_namespaces"] == [{"binding": "KV", "id": "0123456789abcdef0123456789abcdef"}]
        assert parsed["services"] == [{"binding": "SELF", "service": "my-gw"}]
        assert parsed["vars"] == {"CFKV_NAMESPACE_ID": "0123456789abcdef0123456789abcdef"}

    (target / "wrangler.toml").write_text("# mine")
    with pytest.raises(FileExistsError) as info:
        gateway_pkg.write_project(target)
    assert "worker.js" in str(info.value) and "--force" in str(info.value)
    assert (target / "wrangler.toml").read_text() == "# mine"
    gateway_pkg.write_project(target, force=True)
    assert gateway_pkg.NAMESPACE_PLACEHOLDER in (target / "wrangler.toml").read_text()
    with pytest.raises(ValueError):
        gateway_pkg.write_project(tmp_path / "x", name="Bad Name")


def test_gateway_project_keeps_its_secret_out_of_git_and_pins_the_tested_wrangler(tmp_path):
    target = tmp_path / "gw"
    gateway_pkg.write_project(target)
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    (target / ".dev.vars").write_text("CFKV_GATEWAY_TOKEN=local-secret\n")  # what wrangler dev reads
    (target / ".wrangler" / "state").mkdir(parents=True)
    (target / ".wrangler" / "state" / "kv.sqlite").write_text("local KV")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=target, check=True,
                            capture_output=True, text=True).stdout
    assert sorted(line[3:] for line in status.splitlines()) == [
        ".gitignore", "package.json", "worker.js", "wrangler.toml"]
    tested = json.loads((pathlib.Path(__file__).parent / "package.json").read_text())["devDependencies"]["wrangler"]
    pinned = json.loads((target / "package.json").read_text())["devDependencies"]["wrangler"]
    assert pinned == tested == gateway_pkg.WRANGLER_VERSION == "4.86.0"
    steps = gateway_pkg.deploy_instructions("cfkv-gateway", None)
    assert steps.index("npm install") < steps.index("npx wrangler kv namespace create")
    assert "npx wrangler dev" in steps and ".dev.vars" in steps


def test_deploy_instructions():
    text = gateway_pkg.deploy_instructions("my-gw", "0123456789abcdef0123456789abcdef")
    for needle in ["npx wrangler deploy", "npx wrangler secret put CFKV_GATEWAY_TOKEN",
                   '"BACKEND": "cloudflare"',
                   "https://my-gw.<your-subdomain>.workers.dev/client/v4", "0123456789abcdef0123456789abcdef",
                   "ACCOUNT_ID", "API_TOKEN"]:
        assert needle in text
    assert "npx wrangler kv namespace create cfkv --binding KV" in gateway_pkg.deploy_instructions("my-gw", None)
    assert "npx wrangler kv namespace create cfkv --binding KV" in gateway_pkg.wrangler_toml("my-gw")
