"""Client overhead and threads.

KVClient against a bare requests.Session making the same HTTP calls to the same
emulator (target <= 1.15x), and against Cloudflare's official SDK doing the
same operations (targets: PUT at least 2x faster than the SDK, GET no slower).
Threads: throughput with 1, 4 and 16 threads, and connections opened.
Writes with metadata: client CPU per write in each shape that keeps a binary
value's bytes through every form-data parser, against a raw PUT.
"""

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid

import requests

from django_cfkv import limits
from django_cfkv.client import KVClient, answer, bulk, encode_key, request
from django_cfkv.client.urls import account_url, namespace_url
from django_cfkv.testing import connections_opened

from .common import ACCOUNT, TOKEN, emulator, interleaved, row

VALUE = b"x" * 512
BINARY = bytes(range(256)) * 2  # 512 bytes, not UTF-8: what a pickled cache entry looks like
METADATA = {"kind": "cache", "expires": 1900000000.5, "size": 512}


def run(smoke=False):
    n, rounds = (20, 1) if smoke else (300, 5)
    rows = []
    with emulator() as base_url:
        rows += _overhead(base_url, n, rounds)
        rows += _metadata_writes(n, rounds)
        rows += _threads(base_url, 20 if smoke else 2000)
    return rows


def _overhead(base_url, n, rounds):
    ns = uuid.uuid4().hex
    url = f"{base_url}/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/"
    bare = requests.Session()
    bare.headers["Authorization"] = f"Bearer {TOKEN}"
    client = KVClient(ACCOUNT, ns, TOKEN, base_url=base_url)
    cases = {
        "bare put": lambda i: bare.put(f"{url}b{i}", data=VALUE,
                                       headers={"Content-Type": "application/octet-stream"}, timeout=30),
        "kvclient put": lambda i: client.put(f"c{i}", VALUE),
        "bare get": lambda i: bare.get(f"{url}b{i}", timeout=30).content,
        "kvclient get": lambda i: client.get(f"c{i}"),
    }
    sdk = _sdk(base_url)
    if sdk is not None:
        values = sdk.kv.namespaces.values
        cases["sdk put"] = lambda i: values.update(f"s{i}", account_id=ACCOUNT, namespace_id=ns, value=VALUE)
        cases["sdk get"] = lambda i: values.get(f"s{i}", account_id=ACCOUNT, namespace_id=ns).read()
    for name in list(cases):  # warm up every path (connections, imports)
        for i in range(3):
            cases[name](i)
    t = interleaved(cases, n, rounds)
    rows = []
    for op in ("put", "get"):
        ours, base = t[f"kvclient {op}"], t[f"bare {op}"]
        rows.append(row("client", f"{op} wall per op", ours[0] * 1e3, "ms", baseline=f"bare requests {op}",
                        baseline_value=base[0] * 1e3, target="<= 1.15x", ok=ours[0] <= base[0] * 1.15))
        rows.append(row("client", f"{op} cpu per op", ours[1] * 1e3, "ms", baseline=f"bare requests {op}",
                        baseline_value=base[1] * 1e3, target="<= 1.15x", ok=ours[1] <= base[1] * 1.15))
        if sdk is not None:
            theirs = t[f"sdk {op}"]
            target, ok = ("SDK/ours >= 2x", theirs[0] >= 2 * ours[0]) if op == "put" else \
                ("SDK/ours >= 1x", theirs[0] >= ours[0])
            rows.append(row("client", f"{op} wall per op vs SDK", ours[0] * 1e3, "ms",
                            baseline=f"cloudflare SDK {op}", baseline_value=theirs[0] * 1e3,
                            target=target, ok=ok, note=f"SDK is {theirs[0] / ours[0]:.2f}x ours"))
    return rows


def _metadata_writes(n, rounds):
    """Client CPU of one write with metadata in each wire shape, against a raw PUT of the same value.

    Two figures per shape: building the request alone (in process, steady), and
    the whole write against a sink server that answers every call at once with
    the same envelope. Not the emulator: its multipart parser is slower than its
    raw path, and a client that waits longer spends more CPU on wake-ups, which
    would be charged to the shape.
    """
    client = KVClient(ACCOUNT, uuid.uuid4().hex, TOKEN, base_url="http://127.0.0.1:9/client/v4")
    shapes = _write_shapes()
    session = client.transport.session

    def build(shape):
        method, path, kwargs = shape("key:1")
        url = _namespace_url(client) + path
        return lambda i: session.prepare_request(requests.Request(method, url, **kwargs))

    built = interleaved({name: build(shape) for name, shape in shapes.items()}, n * 20, rounds)
    rows = _shape_rows("build the request", built)
    with _sink() as base_url:
        client = KVClient(ACCOUNT, uuid.uuid4().hex, TOKEN, base_url=base_url)

        def write(shape):
            def run(i):
                method, path, kwargs = shape(f"key:{i}")
                if "files" in kwargs:  # requests' own multipart encoder, as requests would run it when sending
                    encoded = requests.Request(method, "http://sink/", files=kwargs["files"]).prepare()
                    kwargs = {"data": encoded.body, "headers": {"Content-Type": encoded.headers["Content-Type"]}}
                call = request.KVRequest(method, path, "put", keys=(f"key:{i}",))
                response = client.transport.request(method, _namespace_url(client) + path, endpoint="put", **kwargs)
                (answer.unsuccessful if path == "/bulk" else answer.envelope)(response, call)
            return run

        cases = {name: write(shape) for name, shape in shapes.items()}
        for name in cases:
            for i in range(3):
                cases[name](i)
        rows += _shape_rows("whole write", interleaved(cases, n, rounds))
        client.close()
    return rows


def _namespace_url(client):
    return namespace_url(account_url(client.base_url, client.account_id), client.namespace_id)


def _shape_rows(what, t):
    raw = t["raw PUT, no metadata"][1]
    return [row("client", f"write with metadata, {what}: {name}", cpu * 1e6, "us cpu", baseline="raw PUT",
                baseline_value=raw * 1e6) for name, (_, cpu) in t.items() if name != "raw PUT, no metadata"]


def _write_shapes():
    """Each way to send one binary value with its metadata, as (method, path, request kwargs).

    Each validates its input as put() does. All keep the value's bytes through
    every form-data parser but the first, which is how put() wrote before.
    """
    def raw(key):
        value = limits.validate_value(BINARY)
        return "PUT", f"/values/{encode_key(key)}", {"data": value, "headers": {
            "Content-Type": "application/octet-stream"}}

    def multipart(filename):
        def shape(key):
            value, meta = limits.validate_value(BINARY), limits.encode_metadata(METADATA)
            return "PUT", f"/values/{encode_key(key)}", {"files": {
                "value": (filename, value, "application/octet-stream"),
                "metadata": (None, meta, "application/json")}}
        return shape

    def by_hand(key):  # what put() sends
        body, content_type = request.form(limits.validate_value(BINARY), limits.encode_metadata(METADATA))
        return "PUT", f"/values/{encode_key(key)}", {"data": body, "headers": {"Content-Type": content_type}}

    def one_item_bulk(key):
        body = json.dumps([bulk.item({"key": key, "value": BINARY, "metadata": METADATA})], separators=(",", ":"))
        return "PUT", "/bulk", {"data": body, "headers": {"Content-Type": "application/json"}}

    return {
        "raw PUT, no metadata": raw,
        "multipart, value part without filename (before; formData() alters it)": multipart(None),
        "multipart, file part, requests' encoder": multipart("value"),
        "multipart, file part, built by hand (put() now)": by_hand,
        "one-item bulk write, base64": one_item_bulk,
    }


_SINK = """
import json, socket, sys, threading
ANSWER = json.dumps({"success": True, "errors": [], "messages": [],
                     "result": {"successful_key_count": 1, "unsuccessful_keys": []}}).encode()
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(ANSWER)

def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = conn.makefile("rb")
    while True:
        length = 0
        line = reader.readline()
        if not line:
            return
        while (line := reader.readline()) not in (b"\\r\\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        reader.read(length)
        conn.sendall(HEAD + ANSWER)

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(64)
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@contextlib.contextmanager
def _sink():
    """A server in its own process that reads each request and answers success at once."""
    proc = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/client/v4"
    finally:
        proc.terminate()
        proc.wait(10)


def _sdk(base_url):
    try:
        import cloudflare
    except ImportError:
        return None
    return cloudflare.Cloudflare(api_token=TOKEN, base_url=base_url, max_retries=0)


def _threads(base_url, total):
    rows = []
    single = None
    for threads in (1, 4, 16):
        client = KVClient(ACCOUNT, uuid.uuid4().hex, TOKEN, base_url=base_url)
        per = max(1, total // threads)

        def work(t, client=client, per=per):
            for i in range(per):
                client.put(f"t{t}-{i}", VALUE)
                client.get(f"t{t}-{i}")

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        ops = 2 * per * threads / (time.perf_counter() - started)
        single = single or ops
        rows.append(row("threads", f"{threads} threads", ops, "ops/s", baseline="1 thread", baseline_value=single,
                        note=f"{connections_opened(client)} connections opened"))
        rows.append(row("threads", f"{threads} threads: connections", connections_opened(client),
                        "connections", target=f"<= {threads}", ok=connections_opened(client) <= threads))
        client.close()
    return rows
