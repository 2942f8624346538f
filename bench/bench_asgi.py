"""An async view under uvicorn: a session load and two cache reads awaited together, native against threads.

The site (bench/asgi_app.py, no middleware) runs under uvicorn in a child
process, on an emulator that adds 50 ms to every call. One page, three ways,
interleaved in the same server process:

- ``native``: ``SessionStore.aload()`` and two ``cache.aget()`` in one ``asyncio.gather``;
- ``wrapped`` (the baseline): the blocking ``load()`` and ``get()`` each wrapped in
  ``sync_to_async``, as Django's default async methods wrap them (thread-sensitive:
  one after another, in the request's thread);
- ``no KV``: the same view and answer without KV.

Latency: one request at a time; what KV adds to the page (its median less the no-KV
page's) in round trips of 50 ms (target <= 1.2 for ``native``). Load: 200 requests in
flight: requests per second, and the server process's peak thread count (sampled from
/proc; not measured elsewhere), against the wrapped page and the no-KV page. Which of
the reads awaited natively is read from the running site and shown in the rows.
"""

import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from .common import ACCOUNT, TOKEN, emulator, free_port, row

ROOT = Path(__file__).resolve().parent.parent
LATENCY_MS = 50
IN_FLIGHT = 200
PAGES = {"native": "/native/", "wrapped": "/wrapped/", "no KV": "/no-kv/"}


def run(smoke=False):
    missing = [name for name in ("aiohttp", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        return [row("asgi", "async view under uvicorn", 0, "", note=f"{' and '.join(missing)} not installed: "
                    "not measured (make venv installs them)")]
    sizes = {"n": 3, "rounds": 1, "in_flight": 20, "each": 2} if smoke else \
        {"n": 20, "rounds": 5, "in_flight": IN_FLIGHT, "each": 5}
    with emulator("--latency-ms", str(LATENCY_MS)) as base_url, _server(base_url) as server:
        return asyncio.run(_run(server, **sizes))


class _server:
    """uvicorn serving bench/asgi_app.py in a child process; ``.url`` and ``.pid``."""

    def __init__(self, base_url):
        self.base_url = base_url

    def __enter__(self):
        port = free_port()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.asgi_settings", "CFKV_BENCH_BASE_URL": self.base_url,
               "CFKV_BENCH_ACCOUNT": ACCOUNT, "CFKV_BENCH_TOKEN": TOKEN,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.asgi_app:application", "--host", "127.0.0.1", "--port", str(port),
             "--lifespan", "off", "--no-access-log", "--log-level", "warning", "--backlog", "4096"],
            env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pid, self.url = self.proc.pid, f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stderr.close()


async def _run(server, n, rounds, in_flight, each):
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as http:
        await _wait_until_up(http, server)
        async with http.get(f"{server.url}/prepare/") as response:
            cookies = {"sessionid": (await response.json())["session"]}
        async with http.get(f"{server.url}/paths/") as response:
            paths = await response.json()

        async def view(page):
            async with http.get(server.url + PAGES[page], cookies=cookies) as response:
                assert response.status == 200, (page, response.status, await response.text())
                return await response.json()

        answers = {page: await view(page) for page in PAGES}  # warm up: connections, imports, threads
        assert answers["native"] == answers["wrapped"] == answers["no KV"], answers  # every path read the same
        for _ in range(2):
            await asyncio.gather(*(view(page) for page in PAGES for _ in range(in_flight // 4)))
        latency = {page: [] for page in PAGES}
        load = {page: [] for page in PAGES}
        for _ in range(rounds):
            for page in PAGES:
                for _ in range(n):
                    started = time.perf_counter()
                    await view(page)
                    latency[page].append((time.perf_counter() - started) * 1000)
            for page in PAGES:
                load[page].append(await _under_load(view, page, in_flight, each, server.pid))
    return _rows(latency, load, paths, in_flight)


async def _wait_until_up(http, server, timeout=30):
    import aiohttp

    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.proc.returncode}: {server.proc.stderr.read()[-2000:]}")
        try:
            async with http.get(f"{server.url}/no-kv/") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not answer within {timeout} s")
        await asyncio.sleep(0.1)


async def _under_load(view, page, in_flight, each, pid):
    """Serve ``in_flight`` clients making ``each`` requests apiece; return (requests/s, peak server threads)."""
    sampler = _ThreadSampler(pid)

    async def client():
        for _ in range(each):
            await view(page)

    with sampler:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    return in_flight * each / elapsed, sampler.peak


class _ThreadSampler:
    """The peak thread count of process ``pid`` while in the block, read from /proc every millisecond or so."""

    def __init__(self, pid):
        self.status = Path(f"/proc/{pid}/status")
        self.peak = None
        self._stop = threading.Event()

    def _count(self):
        for line in self.status.read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return None

    def _sample(self):
        while not self._stop.is_set():
            count = self._count()
            self.peak = count if self.peak is None else max(self.peak, count)
            self._stop.wait(0.001)

    def __enter__(self):
        if self.status.exists():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.status.exists():
            self._thread.join()


def _rows(latency, load, paths, in_flight):
    native_paths = ", ".join(f"{read}: {how}" for read, how in paths.items())
    base = statistics.median(latency["no KV"])
    rows = []
    for page, label in (("native", "native (aload + aget)"), ("wrapped", "sync_to_async-wrapped load + get")):
        added = statistics.median(latency[page]) - base
        note = f"{added / LATENCY_MS:.2f} round trips" + (f"; {native_paths}" if page == "native" else "")
        rows.append(row("asgi", f"gather of session load + 2 cache reads, {label}, at {LATENCY_MS} ms/call: "
                        "added latency", added, "ms", target="<= 1.2 round trips" if page == "native" else None,
                        ok=added <= 1.2 * LATENCY_MS if page == "native" else None, note=note))
    rps = {page: statistics.median(r for r, _ in load[page]) for page in load}
    peaks = {page: max((p for _, p in load[page] if p is not None), default=None) for page in load}
    rows.append(row("asgi", f"{in_flight} in flight, native: requests/s", rps["native"], "req/s",
                    baseline="sync_to_async-wrapped", baseline_value=rps["wrapped"], target=">= 1x",
                    ok=rps["native"] >= rps["wrapped"], note=f"no-KV page {rps['no KV']:.0f} req/s"))
    if peaks["native"] is None:
        rows.append(row("asgi", f"{in_flight} in flight: server threads", 0, "",
                        note="not measured: no /proc on this system"))
        return rows
    for page, target in (("wrapped", None), ("no KV", "<= 1x")):
        rows.append(row("asgi", f"{in_flight} in flight, native: peak server threads", peaks["native"], "threads",
                        baseline=f"{page} page", baseline_value=peaks[page], target=target,
                        ok=None if target is None else peaks["native"] <= peaks[page], note=native_paths))
    return rows
