"""Latency distributions of the bench rows that carry samples, as one PNG (needs matplotlib).

    python -m bench.plot [bench/results/latest.json] [out.png]
"""

import json
import sys
from pathlib import Path


def plot(rows, path):
    """Draw a box per measured case (and its baseline) into ``path``; return the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = []
    for r in rows:
        if r.get("samples_ms"):
            case = r["case"].split(": added latency")[0]  # page-view rows: the samples are whole pages
            if r.get("baseline_samples_ms"):
                series.append((f"{r['bench']}: {case} [baseline: {r['baseline']}]", r["baseline_samples_ms"]))
            series.append((f"{r['bench']}: {case}", r["samples_ms"]))
    if not series:
        return None
    labels = [_short(label) for label, _ in series]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(series) + 1.5))
    data = [samples for _, samples in series]
    try:
        ax.boxplot(data, orientation="horizontal", whis=(5, 95))  # matplotlib >= 3.10
    except TypeError:
        ax.boxplot(data, vert=False, whis=(5, 95))
    ax.set_yticks(range(1, len(series) + 1), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds per operation (log scale; box: p25-p75, whiskers: p5-p95)")
    ax.set_title("django-cfkv: latency distributions")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(text, size=90):
    return text if len(text) <= size else text[: size - 3] + "..."


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "latest.json")
    target = sys.argv[2] if len(sys.argv) > 2 else source.with_suffix(".png")
    done = plot(json.loads(source.read_text())["rows"], target)
    print(done or "matplotlib is not installed (pip install matplotlib): no plot drawn")
