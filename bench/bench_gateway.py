"""Gateway overhead: the Worker gateway against a bare Worker making the same KV calls.

Both run under Miniflare on loopback (tests/gateway/serve.mjs); the gateway
without the test-only counting shim. One pooled ``requests.Session`` per
server, in this process. Measures N single PUTs, N single GETs and
ceil(N/10) bulk GETs of 100 keys, and prints a markdown table with ops/s,
p50/p95 latency and the gateway/bare ratio (target <= 1.2x).

    python bench/bench_gateway.py --n 2000
    python -c "from bench.bench_gateway import measure; print(measure(50))"

``run(smoke=False)`` gives ``python -m bench`` its rows (a "not measured"
row, saying why, when Node or Miniflare is missing).

Needs ``npm ci --prefix tests/gateway``. Absolute numbers are Miniflare on
this machine, not Cloudflare's edge; the ratio is what this measures.
"""

import argparse
import math
import pathlib
import statistics
import sys
import time
from urllib.parse import quote

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.gateway.server import GatewayServer  # noqa: E402

VALUE = b"v" * 256
TARGET_RATIO = 1.2


def _percentile(samples, q):
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _summary(samples):
    total = sum(samples)
    return {
        "count": len(samples),
        "ops_per_s": len(samples) / total if total else float("inf"),
        "p50_ms": _percentile(samples, 0.50) * 1000,
        "p95_ms": _percentile(samples, 0.95) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
        "samples_ms": [s * 1000 for s in samples],
    }


class _Target:
    def __init__(self, server):
        self.server = server
        self.session = requests.Session()
        self.session.headers.update(server.headers())
        self.ns = server.namespace_url

    def put(self, key):
        r = self.session.put(f"{self.ns}/values/{quote(key, safe='')}", data=VALUE,
                             headers={"Content-Type": "application/octet-stream"})
        r.raise_for_status()

    def get(self, key):
        r = self.session.get(f"{self.ns}/values/{quote(key, safe='')}")
        r.raise_for_status()
        assert r.content == VALUE

    def bulk_get(self, keys):
        r = self.session.post(f"{self.ns}/bulk/get", json={"keys": keys, "type": "text"})
        r.raise_for_status()
        assert len(r.json()["result"]["values"]) == len(keys)

    def close(self):
        self.session.close()


def _timed(fn, args):
    samples = []
    for arg in args:
        start = time.perf_counter()
        fn(arg)
        samples.append(time.perf_counter() - start)
    return samples


def run(smoke=False):
    """Return bench rows: gateway/bare time per operation (p50) for put, get and bulk get."""
    from tests.gateway.server import GatewayNotInstalled, check_installed

    from .common import row

    try:
        check_installed()
    except GatewayNotInstalled as exc:
        return [row("gateway", "gateway vs bare Worker", 0, "x", target=f"<= {TARGET_RATIO}x",
                    note=f"not measured: {exc}")]
    report = measure(20 if smoke else 1000)
    rows = []
    for phase, ratio in report["ratio"].items():
        gateway, bare = report["results"]["gateway"][phase], report["results"]["bare"][phase]
        r = row("gateway", f"{phase} through the gateway (n={report['n']}, Miniflare)", gateway["p50_ms"], "ms p50",
                baseline="bare Worker p50 ms", baseline_value=bare["p50_ms"], target=f"<= {TARGET_RATIO}x",
                ok=ratio["p50"] <= TARGET_RATIO,
                note=f"mean-time ratio {ratio['throughput']:.2f}x; "
                     f"p95 {gateway['p95_ms']:.2f} vs {bare['p95_ms']:.2f} ms")
        r["samples_ms"], r["baseline_samples_ms"] = gateway["samples_ms"], bare["samples_ms"]
        rows.append(r)
    return rows


def measure(n=500):
    """Benchmark both Workers with ``n`` puts and gets; return the figures as a dict."""
    n = max(10, int(n))
    keys = [f"bench/{i:06d}" for i in range(n)]
    bulk_batches = [keys[(i * 100) % n:][:100] for i in range(max(3, math.ceil(n / 10)))]
    warm = [f"warm/{i}" for i in range(min(50, n))]
    results = {"gateway": {}, "bare": {}}
    with GatewayServer(counting=False) as gateway, GatewayServer(worker="bare") as bare:
        targets = {"gateway": _Target(gateway), "bare": _Target(bare)}
        try:
            for target in targets.values():  # warm up connections and the isolates
                _timed(target.put, warm)
                _timed(target.get, warm)
            phases = [("put", "put", keys), ("get", "get", keys), ("bulk_get_100", "bulk_get", bulk_batches)]
            for phase, method, args in phases:
                samples = {"gateway": [], "bare": []}
                half = math.ceil(len(args) / 2)
                # Interleave halves (gateway, bare, bare, gateway) to spread drift evenly.
                for name, part in [("gateway", args[:half]), ("bare", args[:half]),
                                   ("bare", args[half:]), ("gateway", args[half:])]:
                    samples[name] += _timed(getattr(targets[name], method), part)
                for name in samples:
                    results[name][phase] = _summary(samples[name])
        finally:
            for target in targets.values():
                target.close()
    ratios = {}
    for phase in results["gateway"]:
        g, b = results["gateway"][phase], results["bare"][phase]
        ratios[phase] = {"p50": g["p50_ms"] / b["p50_ms"], "throughput": b["ops_per_s"] / g["ops_per_s"]}
    return {"n": n, "results": results, "ratio": ratios, "target_ratio": TARGET_RATIO}


def table(report):
    lines = [
        f"Gateway vs bare Worker, Miniflare on loopback, n={report['n']} "
        "(ratio = gateway/bare, time per op; target <= 1.2x)",
        "",
        "| operation | worker | ops/s | p50 ms | p95 ms | ratio (p50) | ratio (mean time) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase, ratio in report["ratio"].items():
        for name in ("gateway", "bare"):
            r = report["results"][name][phase]
            extra = (f"{ratio['p50']:.2f}x", f"{ratio['throughput']:.2f}x") if name == "gateway" else ("", "")
            lines.append(f"| {phase} | {name} | {r['ops_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} "
                         f"| {extra[0]} | {extra[1]} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="puts and gets per worker (default 1000)")
    args = parser.parse_args(argv)
    report = measure(args.n)
    print(table(report))
    worst = max(r["throughput"] for r in report["ratio"].values())
    print(f"\nworst ratio {worst:.2f}x (target <= {TARGET_RATIO}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
