"""python -m bench [--smoke] [--only NAME ...]: run the benchmarks, print a table, write JSON."""

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

BENCHES = ["bench_client", "bench_async", "bench_asgi", "bench_store", "bench_calls", "bench_pageview",
           "bench_gateway", "bench_cache_stampede", "bench_cache_signing", "bench_sessions_async"]
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every bench still runs")
    parser.add_argument("--only", nargs="*", help="run only these benches")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    if args.smoke:
        os.environ["CFKV_BENCH_SMOKE"] = "1"
    import django

    django.setup()
    rows, failures = [], []
    for name in args.only or BENCHES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                continue  # not written yet
            raise
        started = time.perf_counter()
        print(f"running {name}...", file=sys.stderr, flush=True)
        try:
            rows += module.run(smoke=args.smoke)
        except Exception as exc:  # report every bench, then fail
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"  {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": platform.python_version(), "smoke": args.smoke,
                               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(table(rows) + "\n")
    from .plot import plot

    drawn = plot(rows, out.with_suffix(".png"))
    if drawn:
        print(f"latency plot: {drawn}", file=sys.stderr)
    else:
        print("no latency plot: matplotlib is not installed (pip install matplotlib) "
              "or no bench recorded samples", file=sys.stderr)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def table(rows):
    lines = ["| bench | case | value | baseline | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("baseline_value") is not None:
            base = f"{r['baseline']}: {r['baseline_value']:.3g}"
        else:
            base = r.get("baseline") or ""
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else ""
        met = "" if r.get("ok") is None else ("yes" if r["ok"] else "NO")
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {r['bench']} | {r['case']}{note} | {r['value']:.3g} {r['unit']} | {base} | {ratio} | "
                     f"{r.get('target') or ''} | {met} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
