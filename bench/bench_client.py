"""Client overhead and threads.

KVClient against a bare requests.Session making the same HTTP calls to the same
emulator (target <= 1.15x), and against Cloudflare's official SDK doing the
same operations (targets: PUT at least 2x faster than the SDK, GET no slower).
Threads: throughput with 1, 4 and 16 threads, and connections opened.
"""

import threading
import time
import uuid

import requests

from django_cfkv.client import KVClient

from .common import ACCOUNT, TOKEN, emulator, interleaved, row

VALUE = b"x" * 512


def run(smoke=False):
    n, rounds = (20, 1) if smoke else (300, 5)
    rows = []
    with emulator() as base_url:
        rows += _overhead(base_url, n, rounds)
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
                        note=f"{client.transport.connections_opened} connections opened"))
        rows.append(row("threads", f"{threads} threads: connections", client.transport.connections_opened,
                        "connections", target=f"<= {threads}", ok=client.transport.connections_opened <= threads))
        client.close()
    return rows
