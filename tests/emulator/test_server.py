"""The emulator's HTTP server: connections, request bodies and their framing, logs, the command line."""

import http.client
import io
import json
import socket
import subprocess
import sys
import time

import pytest
import requests

from django_cfkv import limits
from django_cfkv.testing import connections_opened


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


# ------------------------------------------------------ request bodies and their framing

MiB = 1024 * 1024
NS_PATH = "/client/v4/accounts/a/storage/kv/namespaces/n"
OK = json.dumps({"success": True, "errors": [], "messages": [], "result": None}).encode()


def _codes(body):
    return [error["code"] for error in json.loads(body)["errors"]]


def test_a_chunked_body_is_read_and_the_next_request_starts_after_it(own_server):
    server = own_server()
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    # An iterable body with no length goes out chunked.
    conn.request("PUT", f"{NS_PATH}/values/k", body=iter([b"chunked ", b"value"]))
    assert conn.getresponse().read() == OK
    conn.request("PUT", f"{NS_PATH}/bulk", body=iter([b'[{"key": "b", ', b'"value": "bulk"}]']),
                 headers={"Content-Type": "application/json"})
    assert json.loads(conn.getresponse().read())["result"] == {"successful_key_count": 1, "unsuccessful_keys": []}
    for key, value in [("k", b"chunked value"), ("b", b"bulk")]:
        conn.request("GET", f"{NS_PATH}/values/{key}")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, value)
    conn.close()


def test_chunk_extensions_trailers_and_a_pipelined_request(own_server):
    server = own_server()
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(f"PUT {NS_PATH}/values/k HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5;name=value\r\nhello\r\n0\r\nX-Trailer: ignored\r\n\r\n"
                     f"GET {NS_PATH}/values/k HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n".encode())
        received = b"".join(iter(lambda: sock.recv(65536), b""))  # until the server hangs up
    assert _answers(received) == [(200, OK), (200, b"hello")]


class _Unclosed(io.BytesIO):
    def close(self):  # each HTTPResponse closes its file once read: the next one reads on
        pass


def _answers(received):
    """Return [(status, body)] of the answers in ``received``, read one after another."""
    fp, found = _Unclosed(received), []
    while fp.tell() < len(received):
        response = http.client.HTTPResponse(type("Sock", (), {"makefile": lambda self, *a, **k: fp})())
        response.begin()
        found.append((response.status, response.read()))
    return found


def _send_chunked(server, method, path, total, chunk=64 * 1024):
    """Send a chunked body of ``total`` bytes from a thread while reading the answer.

    Returns (status, headers, body, bytes sent in all). Sending stops when the
    server hangs up: a server that reads the whole body lets it all through.
    """
    import threading

    sock = socket.create_connection(server.server_address[:2], timeout=30)
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    sent, piece = [0], f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"

    def send():
        try:
            while sent[0] < total:
                sock.sendall(piece)
                sent[0] += chunk
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        body = response.read()
        sender.join(30)
    finally:
        sock.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body, sent[0]


@pytest.mark.parametrize("method, path, limit", [
    ("POST", "/bulk/get", MiB),                            # a bulk get: 100 keys need far less
    ("PUT", "/values/big", limits.MAX_VALUE_BYTES + 64 * 1024),  # one value, as a multipart form at most
])
def test_a_chunked_body_over_the_limit_is_refused_without_reading_it(own_server, method, path, limit):
    # A chunked body declares no length: the server reads up to the call's limit, then refuses and
    # hangs up, rather than reading (or keeping) whatever a client sends.
    server = own_server()
    total = limit + 96 * MiB
    status, headers, body, sent = _send_chunked(server, method, NS_PATH + path, total)
    assert status == 413 and _codes(body) == [10024]
    assert headers["connection"] == "close"
    assert sent < limit + 48 * MiB  # past the limit, only what the socket buffers took went out
    assert requests.get(f"{server.base_url}/accounts/a/storage/kv/namespaces/n/values/big").status_code == 404


@pytest.mark.parametrize("method, path, length", [
    ("PUT", "/values/k", limits.MAX_VALUE_BYTES + 64 * 1024 + 1),
    ("PUT", "/bulk", limits.BULK_WRITE_MAX_BYTES + 1),
    ("POST", "/bulk/delete", limits.BULK_WRITE_MAX_BYTES + 1),
    ("POST", "/bulk/get", MiB + 1),
    ("GET", "/keys", MiB + 1),
])
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(own_server, method, path, length):
    server = own_server()
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        # Only the head is sent: the answer must not wait for a body.
        sock.sendall(f"{method} {NS_PATH}{path} HTTP/1.1\r\nHost: e\r\nContent-Length: {length}\r\n\r\n".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413 and _codes(response.read()) == [10024]
        assert response.getheader("Connection") == "close"
        assert sock.recv(1) == b""  # and it hung up


def test_the_app_refuses_a_declared_length_over_the_limit_before_reading(tmp_path):
    from django_cfkv.emulator import EmulatorApp

    class Unread:
        def read(self, *args):
            raise AssertionError("the body was read")

    status, _, body = EmulatorApp(tmp_path / "kv.sqlite3").handle({
        "REQUEST_METHOD": "PUT", "PATH_INFO": f"{NS_PATH}/values/k", "wsgi.input": Unread(),
        "CONTENT_LENGTH": str(limits.MAX_VALUE_BYTES * 2)})
    assert status == 413 and _codes(body) == [10024]


def test_a_refused_call_leaves_the_connection_in_step(own_server, tmp_path):
    # The body of a call refused before it is read (a wrong token, no such route) is dropped after the
    # answer, so the connection stays open and its next request is read from its start.
    from django_cfkv.emulator import EmulatorApp

    server = own_server(EmulatorApp(tmp_path / "auth.sqlite3", token="right"))
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    for method, path, body, token, status in [
        ("PUT", "/values/k", b"x" * 300_000, "wrong", 403),
        ("POST", "/nothing", iter([b"abc", b"def"]), "right", 404),
        ("PUT", "/values/k", b"value", "right", 200),
    ]:
        conn.request(method, NS_PATH + path, body=body, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        assert response.status == status and response.getheader("Connection") is None
    conn.request("GET", f"{NS_PATH}/values/k", headers={"Authorization": "Bearer right"})
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"value")
    conn.close()


@pytest.mark.parametrize("head, body, status", [
    ("Content-Length: 5\r\nTransfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n", 400),  # two framings
    ("Transfer-Encoding: gzip, chunked", "5\r\nhello\r\n0\r\n\r\n", 501),
    ("Content-Length: 5\r\nContent-Length: 6", "hello", 400),
    ("Content-Length: +5", "hello", 400),
    ("Content-Length: five", "hello", 400),
    ("Transfer-Encoding: chunked", "zz\r\nhello\r\n0\r\n\r\n", 400),  # not a hex size
    ("Transfer-Encoding: chunked", "-5\r\nhello\r\n0\r\n\r\n", 400),
    ("Transfer-Encoding: chunked", "5\r\nhello!!\r\n0\r\n\r\n", 400),  # longer than its size
])
def test_a_body_the_server_cannot_frame_is_refused_and_the_connection_closed(own_server, head, body, status):
    # Nothing after such a request can be told apart from its body: answer it, then hang up.
    server = own_server()
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(f"PUT {NS_PATH}/values/k HTTP/1.1\r\nHost: e\r\n{head}\r\n\r\n{body}".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == status and _codes(response.read()) == [10029]
        assert response.getheader("Connection") == "close"
        assert sock.recv(1) == b""
    assert requests.get(f"{server.base_url}/accounts/a/storage/kv/namespaces/n/values/k").status_code == 404
