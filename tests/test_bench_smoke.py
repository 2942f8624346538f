"""``python -m bench --smoke`` runs every bench at tiny sizes and writes rows from each.

Optional bench dependencies (the official ``cloudflare`` SDK, django-redis and
redis-server, Node with Miniflare, matplotlib) may be missing: the benches then
report "not measured" rows, and this test still checks that every module ran.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_PREFIXES = {  # module -> the "bench" field of its rows
    "bench_client": "client",
    "bench_async": "async",
    "bench_asgi": "asgi",
    "bench_store": "store",
    "bench_calls": "calls",
    "bench_pageview": "pageview",
    "bench_gateway": "gateway",
    "bench_cache_stampede": "cache_stampede",
    "bench_cache_signing": "cache_signing",
    "bench_sessions_async": "sessions_async",
}


def test_smoke_run_has_rows_from_every_bench(tmp_path):
    from bench.__main__ import BENCHES

    assert set(BENCHES) == set(BENCH_PREFIXES), "a new bench module: add it to BENCH_PREFIXES"
    out = tmp_path / "smoke.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"bench --smoke failed:\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    benches = {r["bench"] for r in report["rows"]}
    for module, name in BENCH_PREFIXES.items():
        assert f"running {module}..." in done.stderr, f"{module} did not run"
        assert name in benches, f"no rows from {module}"
    assert out.with_suffix(".md").read_text().startswith("| bench |")
    for r in report["rows"]:
        assert isinstance(r["value"], (int, float)), r
