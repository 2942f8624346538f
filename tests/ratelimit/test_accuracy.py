"""The KV limiter's accuracy bound and API-call budget, measured with several processes.

Three processes (spawned, each its own Django) with two threads each send
bursts through RateLimitMiddleware at one client, counting on the KV
emulator over HTTP. The test asserts what the docs promise (docs/explanation/ratelimit-counting.md):

* allowed <= limit + (processes - 1) x per-process request rate x lag, where
  lag = 2 x SYNC_INTERVAL (a shard's flush, then the others' read) + slack for
  the HTTP calls themselves;
* at most 2 API calls per second per client per process (one list, one bulk write).

The parameters make the bound discriminating: a limiter that never read the
other processes' shards would admit processes x limit = 60 > 50.
"""

import math
import multiprocessing
import os
import time
from collections import Counter

PROCESSES = 3
THREADS = 2
BURST = 3  # requests per thread, back to back, once per PAUSE
PAUSE = 1.0
DURATION = 4.0  # seconds of sending
LIMIT, RATE = 20, "20/h"  # an hour-long window: the test never straddles two in practice
LAG = 2 * 1.0 + 0.5  # two sync intervals plus slack for the calls' own latency


def _worker(alias, barrier, queue):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    import threading

    from django.http import HttpResponse
    from django.test import RequestFactory, override_settings

    from django_cfkv import transport
    from django_cfkv.middleware import RateLimitMiddleware

    rules = [{"path": r"^/burst/$", "rate": RATE, "key": "ip", "group": "accuracy"}]
    with override_settings(CFKV={"default": alias}, CFKV_RATELIMIT={"RULES": rules}):
        middleware = RateLimitMiddleware(lambda request: HttpResponse("ok"))
        factory = RequestFactory()
        results, lock = [], threading.Lock()
        barrier.wait()
        start = time.monotonic()

        def send():
            while time.monotonic() - start < DURATION:
                for _ in range(BURST):
                    response = middleware(factory.get("/burst/", REMOTE_ADDR="198.51.100.7"))
                    with lock:
                        results.append((int(time.time() // 3600), response.status_code))
                time.sleep(PAUSE)

        threads = [threading.Thread(target=send) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        queue.put({"results": results, "elapsed": time.monotonic() - start, "calls": transport.calls.snapshot()})


def test_processes_stay_within_the_accuracy_bound_and_call_budget(cfkv_emulator):
    ctx = multiprocessing.get_context("spawn")
    alias = cfkv_emulator.alias_settings()
    barrier, queue = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(alias, barrier, queue)) for _ in range(PROCESSES)]
    for w in workers:
        w.start()
    try:
        reports = [queue.get(timeout=60) for _ in workers]
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()

    allowed, sent = Counter(), Counter()
    for report in reports:
        for window_index, status in report["results"]:
            assert status in (200, 429)
            sent[window_index] += 1
            allowed[window_index] += status == 200
    rate = max(len(r["results"]) / r["elapsed"] for r in reports)  # requests/s in one process
    bound = (PROCESSES - 1) * rate * LAG
    for window_index in sent:
        assert allowed[window_index] <= LIMIT + bound
    assert sum(allowed.values()) >= min(LIMIT, sum(sent.values())) * 0.5  # it does admit, too

    for report in reports:
        calls = report["calls"]
        budget = 2 * math.ceil(report["elapsed"]) + 2
        assert set(calls) <= {"list", "bulk_put"}  # no value reads, no single puts
        assert sum(calls.values()) <= budget, calls

    print(f"\naccuracy: sent={sum(sent.values())} allowed={sum(allowed.values())} limit={LIMIT} "
          f"bound={bound:.0f} rate/process={rate:.1f}/s calls/process="
          f"{[dict(r['calls']) for r in reports]} elapsed={[round(r['elapsed'], 1) for r in reports]}")
