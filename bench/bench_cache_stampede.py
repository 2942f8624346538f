"""Cache stampede: how many times a hot key is recomputed, with and without protection.

Two processes of 16 threads each call ``cache.get_or_set(key, compute, timeout)``
in a loop (50 ms think time) against the emulator; ``compute`` takes 200 ms.
Over several expiries we count computations (total and per expiry), the most
computations running at once in one process, the callers that waited for another
thread's computation, and early (XFetch) refreshes. The baseline is the same run
with STAMPEDE_PROTECTION off. Targets: at most one computation at a time per
process, and at most one per process per expiry. XFetch refreshes a key read
R times a second about delta*beta*ln(R*delta*beta) seconds before it expires
(~1 s here), so a timeout much longer than the computation keeps the extra
refreshes few.

Run: ``python -m bench --only bench_cache_stampede`` or ``run(small=True)``.
"""

import multiprocessing
import time
import uuid

from .common import ACCOUNT, TOKEN, emulator, row, smoke_env

PROCESSES = 2
THREADS = 16
COMPUTE_SECONDS = 0.2
THINK_SECONDS = 0.05


def run(small=False, smoke=None):
    """Run the bench; return result rows. ``small`` (or ``smoke``) makes it a few seconds long."""
    small = small or bool(smoke) or smoke_env()
    timeout, expiries = (2, 2) if small else (5, 4)
    results = {}
    with emulator() as base_url:
        for protected in (True, False):
            results[protected] = _measure(base_url, protected, timeout, expiries)
    return _rows(results, timeout, expiries)


def _measure(base_url, protected, timeout, expiries):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    config = {"base_url": base_url, "namespace": uuid.uuid4().hex, "protected": protected,
              "timeout": timeout, "start": time.time() + 2.0, "duration": timeout * expiries}
    procs = [ctx.Process(target=_worker, args=(config, queue)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    reports = [queue.get(timeout=config["duration"] + 60) for _ in procs]
    for proc in procs:
        proc.join(10)
    return reports


def _worker(config, queue):
    """One process: configure Django, run THREADS callers until the time is up, report."""
    import logging
    import threading

    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_cfkv"],
        CFKV={"default": {"BACKEND": "cloudflare", "ACCOUNT_ID": ACCOUNT, "API_TOKEN": TOKEN,
                          "NAMESPACE_ID": config["namespace"], "BASE_URL": config["base_url"]}},
        CACHES={"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default",
                            "OPTIONS": {"STAMPEDE_PROTECTION": config["protected"]}}},
    )
    django.setup()
    # This load (~600 reads/s) is far past the REST quota; the emulator only warns about it.
    logging.getLogger("django_cfkv").setLevel(logging.ERROR)
    from django.core.cache import caches

    from django_cfkv.cache import stampede_events
    from django_cfkv.transport import calls

    intervals, lock, served = [], threading.Lock(), [0]
    end = config["start"] + config["duration"]

    def compute():
        started = time.time()
        time.sleep(COMPUTE_SECONDS)
        with lock:
            intervals.append((started, time.time()))
        return started

    def caller():
        time.sleep(max(0.0, config["start"] - time.time()))
        cache = caches["default"]  # per thread, as in a Django request
        while time.time() < end:
            cache.get_or_set("hot", compute, config["timeout"])
            with lock:
                served[0] += 1
            time.sleep(THINK_SECONDS)

    threads = [threading.Thread(target=caller) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put({"intervals": intervals, "events": stampede_events.snapshot(), "served": served[0],
               "calls": calls.total})


def _max_overlap(intervals):
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def _summary(reports, timeout, expiries):
    computations = sum(len(r["intervals"]) for r in reports)
    return {
        "per_expiry": computations / expiries,
        "overlap": max((_max_overlap(r["intervals"]) for r in reports), default=0),
        "waited": sum(r["events"].get("waited", 0) for r in reports),
        "early": sum(r["events"].get("early_refresh", 0) for r in reports),
        "served": sum(r["served"] for r in reports),
        "calls": sum(r["calls"] for r in reports),
    }


def _rows(results, timeout, expiries):
    on, off = (_summary(results[p], timeout, expiries) for p in (True, False))
    note = f"{PROCESSES} processes x {THREADS} threads, {expiries} expiries of {timeout} s, compute 200 ms"
    return [
        row("cache_stampede", "computations per expiry", on["per_expiry"], "computations",
            baseline="protection off", baseline_value=off["per_expiry"],
            target=f"<= {PROCESSES} (one per process)", ok=on["per_expiry"] <= PROCESSES, note=note),
        row("cache_stampede", "most concurrent computations in one process", on["overlap"], "computations",
            baseline="protection off", baseline_value=off["overlap"], target="1", ok=on["overlap"] <= 1),
        row("cache_stampede", "callers that waited for another thread", on["waited"], "callers"),
        row("cache_stampede", "early (XFetch) refreshes", on["early"], "refreshes"),
        row("cache_stampede", "API calls per get_or_set", on["calls"] / max(on["served"], 1), "calls",
            baseline="protection off", baseline_value=off["calls"] / max(off["served"], 1)),
    ]


if __name__ == "__main__":
    from .__main__ import table

    print(table(run()))
