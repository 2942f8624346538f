"""The async client: the HTTP library it awaits with, chosen by these figures, and what it adds to a bare call.

Library: bare httpx (which Cloudflare's own Python SDK uses) and bare aiohttp make the same GET
and PUT to the same emulator, interleaved in one event loop: wall and CPU per call one at a time,
and calls per second with 1, 16 and 64 in flight (the ratio is httpx's figure over aiohttp's).
Overhead: KVClient.aget/aput against bare aiohttp making the same calls, one at a time
(target <= 1.15x, as the blocking client is held to against bare requests) and 16 in flight;
and against the blocking KVClient.get/put making them from the same process (target <= 1.15x).
One at a time, the cases take turns call by call, in a new random order each turn, and each
figure is the median of its calls (common.ainterleaved_calls).
Floor: what any client that keeps aget's duties pays, measured beside them: its pieces (key check,
call count, the attempt with its timeout and capped read, the budget header, the status) called
inline, with no plan, steps or retry loop between them.
Gather: three reads awaited together against an emulator that adds 50 ms to every call take
one round trip (target <= 1.2), natively and through worker threads (without the extra); and one
read at that latency against bare aiohttp's (no target: the overhead targets are on loopback).
"""

import asyncio
import importlib.util
import sys
import uuid

from django_cfkv import clock, limits, threads
from django_cfkv.client import KVClient
from django_cfkv.client.urls import encode_key
from django_cfkv.transport import accounting
from django_cfkv.transport.exchange import Attempt

from .common import ACCOUNT, TOKEN, ainterleaved, ainterleaved_calls, athroughput, emulator, row

VALUE = b"x" * 512
IN_FLIGHT = (1, 16, 64)
LATENCY_MS = 50


def run(smoke=False):
    if importlib.util.find_spec("aiohttp") is None:
        return [row("async", "async client", 0, "", note="aiohttp (the async extra) not installed: not measured")]
    n, total = (20, 64) if smoke else (3000, 1600)
    with emulator() as base_url:
        rows = asyncio.run(_run(base_url, n, total))
    with emulator("--latency-ms", str(LATENCY_MS)) as base_url:
        rows += asyncio.run(_gather(base_url, 2 if smoke else 10))
    return rows


async def _gather(base_url, n):
    """Wall time of three reads awaited together, in round trips of LATENCY_MS: natively, and in threads;
    and of one read against bare aiohttp's, at that latency."""
    import aiohttp

    ns = uuid.uuid4().hex
    client = KVClient(ACCOUNT, ns, TOKEN, base_url=base_url)
    await client.aput_many([{"key": k, "value": "v"} for k in "abc"])
    bare = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
    url = f"{base_url}/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/a"

    async def bare_one():
        async with bare.get(url) as response:
            await response.read()

    async def one():
        await client.aget("a")

    async def three():
        await asyncio.gather(client.aget("a"), client.aget("b"), client.aget("c"))

    async def three_in_threads():
        await asyncio.gather(*(threads.run(client.get, k) for k in "abc"))

    try:
        for fn in (bare_one, one, three, three_in_threads):  # warm up: connections for three at once, the threads
            await fn()
        t = await ainterleaved({"bare": lambda i: bare_one(), "one": lambda i: one(), "three": lambda i: three(),
                                "threads": lambda i: three_in_threads()}, n, 3)
    finally:
        await bare.close()
        await client.aclose()
        client.close()
    base = t["one"][0] * 1e3
    rows = [row("async", f"aget wall per op, at {LATENCY_MS} ms/call", base, "ms", baseline="bare aiohttp get",
                baseline_value=t["bare"][0] * 1e3, note="what a round trip to Cloudflare leaves of the overhead")]
    for name, label in (("three", "native"), ("threads", "worker threads (no extra)")):
        value = t[name][0] * 1e3
        rows.append(row("async", f"gather of 3 aget, {label}, at {LATENCY_MS} ms/call", value, "ms",
                        baseline="one aget", baseline_value=base, target="<= 1.2 round trips",
                        ok=value <= base * 1.2, note=f"{value / LATENCY_MS:.2f} x {LATENCY_MS} ms"))
    return rows


async def _run(base_url, n, total):
    import aiohttp

    ns = uuid.uuid4().hex
    url = f"{base_url}/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    octets = {"Content-Type": "application/octet-stream"}
    bare = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=64))
    client = KVClient(ACCOUNT, ns, TOKEN, base_url=base_url)

    async def bare_put(i):
        async with bare.put(f"{url}b{i}", data=VALUE, headers=octets) as response:
            await response.read()

    async def bare_get(i):
        async with bare.get(f"{url}b{i % 50}") as response:
            await response.read()

    async def sync_put(i):
        client.put(f"s{i}", VALUE)  # blocking, on purpose: the blocking client's cost from the same process

    async def sync_get(i):
        client.get(f"s{i % 50}")

    async def floor_get(i):
        return await _floor_get(client, f"{url}{encode_key(f'c{i % 50}')}")

    cases = {"aiohttp put": bare_put, "kvclient aput": lambda i: client.aput(f"c{i}", VALUE),
             "kvclient put": sync_put,
             "aiohttp get": bare_get, "kvclient aget": lambda i: client.aget(f"c{i % 50}"),
             "floor aget": floor_get, "kvclient get": sync_get}
    httpx = _httpx(headers)
    if httpx is not None:
        async def httpx_put(i):
            (await httpx.put(f"{url}h{i}", content=VALUE, headers=octets)).raise_for_status()

        async def httpx_get(i):
            (await httpx.get(f"{url}h{i % 50}")).raise_for_status()

        cases.update({"httpx put": httpx_put, "httpx get": httpx_get})
    try:
        for fn in cases.values():  # warm up every path (connections, imports), and write what the gets read
            for i in range(60):
                await fn(i)
        rows = _overhead(await ainterleaved_calls(cases, n))
        rows += await _in_flight(cases, total)
    finally:
        await bare.close()
        await client.aclose()
        client.close()
        if httpx is not None:
            await httpx.aclose()
    return rows


async def _floor_get(client, url):
    """aget's duties with nothing between them: its pieces called inline (the floor of any client keeping them)."""
    aio = sys.modules["django_cfkv.transport.aio"]  # imported by the client's first call; not an import per call
    transport = client.transport
    accounting.record(transport.calls, "get")
    attempt = Attempt("GET", url, "get", None, None, None, limits.MAX_VALUE_BYTES,
                      clock.monotonic() + transport.deadline, transport.timeout)
    answer = await aio._attempt(transport._loops.current() or await transport._loops.get(), attempt)
    transport.quota.note(answer.headers)
    if answer.status_code >= 300:
        raise RuntimeError(f"floor aget: HTTP {answer.status_code}")
    return answer.content


def _overhead(t):
    rows = []
    floor, base = t["floor aget"], t["aiohttp get"]
    for i, what in ((0, "wall"), (1, "cpu")):
        rows.append(row("async", f"floor of aget (its pieces inline), {what} per op", floor[i] * 1e3, "ms",
                        baseline="bare aiohttp get", baseline_value=base[i] * 1e3))
    for op in ("put", "get"):
        ours, base = t[f"kvclient a{op}"], t[f"aiohttp {op}"]
        for i, what in ((0, "wall"), (1, "cpu")):
            rows.append(row("async", f"a{op} {what} per op", ours[i] * 1e3, "ms", baseline=f"bare aiohttp {op}",
                            baseline_value=base[i] * 1e3, target="<= 1.15x", ok=ours[i] <= base[i] * 1.15))
        blocking = t[f"kvclient {op}"]
        rows.append(row("async", f"a{op} wall per op vs blocking", ours[0] * 1e3, "ms",
                        baseline=f"blocking KVClient.{op}", baseline_value=blocking[0] * 1e3,
                        target="<= 1.15x", ok=ours[0] <= blocking[0] * 1.15))
        if f"httpx {op}" in t:
            theirs = t[f"httpx {op}"]
            for i, what in ((0, "wall"), (1, "cpu")):
                rows.append(row("async", f"library: bare httpx {op}, {what} per op", theirs[i] * 1e3, "ms",
                                baseline=f"bare aiohttp {op}", baseline_value=base[i] * 1e3))
    return rows


async def _in_flight(cases, total):
    rows = []
    for in_flight in IN_FLIGHT:
        names = ["aiohttp get", "kvclient aget"] + (["httpx get"] if "httpx get" in cases else [])
        if in_flight != 16:
            names.remove("kvclient aget")
        figures = {}
        for _ in range(3):  # interleaved, medians of three
            for name in names:
                figures.setdefault(name, []).append(await athroughput(cases[name], in_flight, total))
        median = {name: sorted(f)[1] for name, f in figures.items()}
        base = median["aiohttp get"]
        for name in names[1:]:
            label = "kvclient aget" if name.startswith("kvclient") else "library: bare httpx get"
            rows.append(row("async", f"{label}, {in_flight} in flight", median[name][0], "calls/s",
                            baseline="bare aiohttp get", baseline_value=base[0],
                            note=f"cpu {median[name][1] * 1e3:.3f} ms/call against {base[1] * 1e3:.3f}"))
    return rows


def _httpx(headers):
    """Bare httpx as Cloudflare's SDK uses it, or None when it is not installed (the test extras bring it)."""
    try:
        import httpx
    except ImportError:
        return None
    return httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
