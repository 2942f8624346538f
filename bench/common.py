"""Shared pieces: an emulator in a subprocess, timing, result rows."""

import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACCOUNT = "0" * 32
TOKEN = "bench-token"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def emulator(*extra_args):
    """Run the emulator in its own process (so its CPU is not counted as ours); yield its base URL."""
    with tempfile.TemporaryDirectory(prefix="cfkv-bench-") as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "django_cfkv.emulator", "--port", str(port), "--token", TOKEN,
             "--path", str(Path(tmp) / "kv.sqlite3"), *extra_args],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            proc.stdout.readline()
            yield f"http://127.0.0.1:{port}/client/v4"
        finally:
            proc.terminate()
            proc.wait(10)


def measure(fn, n):
    """Run fn(i) n times; return (wall seconds per op, cpu seconds per op)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def interleaved(cases, n, rounds):
    """Measure each case in turn, ``rounds`` times, so drift hits all alike; return medians."""
    samples = {name: ([], []) for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            wall, cpu = measure(fn, n)
            samples[name][0].append(wall)
            samples[name][1].append(cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in samples.items()}


def row(bench, case, value, unit, *, baseline=None, baseline_value=None, target=None, ok=None, note=""):
    ratio = value / baseline_value if baseline_value else None
    return {"bench": bench, "case": case, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "ratio": ratio, "target": target, "ok": ok, "note": note}


def smoke_env():
    return os.environ.get("CFKV_BENCH_SMOKE") == "1"


async def ameasure(fn, n):
    """Await fn(i) n times, one after another; return (wall seconds per op, cpu seconds per op)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await fn(i)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


async def ainterleaved(cases, n, rounds):
    """As interleaved(), for coroutine functions, in the running event loop."""
    samples = {name: ([], []) for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            wall, cpu = await ameasure(fn, n)
            samples[name][0].append(wall)
            samples[name][1].append(cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in samples.items()}


async def ainterleaved_calls(cases, n):
    """As ainterleaved(), one call at a time: call i of every case, in a new random order, before call i + 1 of
    any. Return each case's median (wall, cpu) seconds per call. A shared machine's speed drifts over seconds, so
    rounds of hundreds of calls each can meet different weather; neighbouring calls meet the same."""
    names, samples = list(cases), {name: ([], []) for name in cases}
    for i in range(n):
        random.shuffle(names)
        for name in names:
            wall, cpu = time.perf_counter(), time.process_time()
            await cases[name](i)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            samples[name][0].append(wall)
            samples[name][1].append(cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in samples.items()}


async def athroughput(fn, in_flight, total):
    """Await ``total`` calls of fn(i), ``in_flight`` at a time; return (calls per second, cpu seconds per call)."""
    import asyncio

    per = max(1, total // in_flight)

    async def worker(w):
        for i in range(per):
            await fn(w * per + i)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    done = per * in_flight
    return done / (time.perf_counter() - wall), (time.process_time() - cpu) / done
