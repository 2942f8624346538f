"""Stampede protection in get_or_set (the @cached decorator's async path is in test_decorator.py):
one computation per process while the others wait, a failed one releasing them, early recomputation
(XFetch) as expiry nears while others keep serving, and every caller computing without it."""

import threading
import time

import pytest
from django.core.cache import caches

from django_cfkv import clock as cfkv_clock
from django_cfkv import get_kv
from django_cfkv.cache import stampede, stampede_events
from django_cfkv.cache.codec import Entry, load_entry


def _run_threads(count, target):
    """Run ``target`` in ``count`` threads; return (their results, the exceptions they raised)."""
    results, errors = [None] * count, []

    def run(i):
        try:
            results[i] = target()
        except Exception as exc:  # noqa: BLE001 - collected and asserted
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "a caller was left waiting"
    return results, errors


def _wait_until(condition, timeout=10):
    """Poll ``condition`` until it holds (a step of the scenario, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the scenario never reached its next step"
        time.sleep(0.005)


def _waiting():
    return stampede_events.snapshot().get("waited", 0)


def test_one_computation_per_process_while_others_wait(kvcache):
    runs = []
    stampede_events.reset()

    def compute():
        runs.append(1)
        _wait_until(lambda: _waiting() == 7)  # every other caller waits for this computation
        return {"n": len(runs)}

    # Django gives each thread its own cache object: coordination must be process-wide.
    results, errors = _run_threads(8, lambda: caches["kv"].get_or_set("hot", compute, 60))
    assert not errors and len(runs) == 1 and results == [{"n": 1}] * 8
    assert stampede_events.snapshot() == {"computed": 1, "waited": 7}


def test_without_protection_every_caller_computes(kvcache, settings):
    settings.CACHES = {**settings.CACHES, "raw": {**settings.CACHES["kv"],
                                                  "OPTIONS": {"STAMPEDE_PROTECTION": False}}}
    barrier = threading.Barrier(4)

    def compute():
        barrier.wait(5)  # passes only if all four compute at once
        return "v"

    results, errors = _run_threads(4, lambda: caches["raw"].get_or_set("cold", compute, 60))
    assert not errors and results == ["v"] * 4


def test_a_failed_computation_releases_the_waiters_to_compute_themselves(kvcache, settings):
    settings.CACHES = {**settings.CACHES, "slow": {**settings.CACHES["kv"], "OPTIONS": {"STAMPEDE_WAIT": 60}}}
    stampede_events.reset()
    computing, calls = threading.Event(), []

    def compute():
        calls.append(1)
        if len(calls) == 1:
            computing.set()
            _wait_until(lambda: _waiting() == 3)  # the three others wait for this computation...
            raise RuntimeError("backend down")  # ...which fails
        return "second try"

    def caller():
        return caches["slow"].get_or_set("fragile", compute, 60)

    leader = {}

    def lead():
        try:
            leader["result"] = caller()
        except RuntimeError as exc:
            leader["error"] = exc

    leading = threading.Thread(target=lead)
    leading.start()
    assert computing.wait(10)
    results, errors = _run_threads(3, caller)  # joined within 10 s although STAMPEDE_WAIT is 60 s
    leading.join(10)
    assert str(leader.get("error")) == "backend down" and "result" not in leader  # the failure is the leader's
    assert not errors and results == ["second try"] * 3
    assert len(calls) == 4  # each waiter, released with nothing, computed once itself
    assert stampede_events.snapshot() == {"computed": 4, "waited": 3}


def test_xfetch_recomputes_early_as_expiry_nears(kvcache, monkeypatch):
    runs = []

    def compute():
        runs.append(1)
        time.sleep(0.05)  # a computation that takes a while: its time is stored with the value
        return len(runs)

    assert kvcache.get_or_set("x", compute, 60) == 1
    entry = load_entry(get_kv().get(kvcache.kv_key("x")), kvcache.kv_key("x"))
    assert entry.delta >= 0.05
    monkeypatch.setattr(stampede, "uniform", lambda: 0.5)  # -ln(0.5) = 0.69: refresh within 0.69 * delta of expiry
    assert kvcache.get_or_set("x", compute, 60) == 1  # 59 s before expiry: no refresh
    monkeypatch.setattr(cfkv_clock, "now", lambda: entry.expires - 0.01)
    assert kvcache.get_or_set("x", compute, 60) == 2  # just before expiry: refreshed early
    assert len(runs) == 2


def test_early_refresh_lets_other_threads_keep_serving(kvcache, monkeypatch):
    kvcache.get_or_set("x", lambda: "old", 60)
    expires = load_entry(get_kv().get(kvcache.kv_key("x")), kvcache.kv_key("x")).expires
    refreshing, release = threading.Event(), threading.Event()

    def slow_refresh():
        refreshing.set()
        release.wait(5)
        return "new"

    # Shortly before expiry; within KV's own TTL too (the store reads the same clock, and counts whole seconds).
    monkeypatch.setattr(cfkv_clock, "now", lambda: expires - 1.5)
    monkeypatch.setattr(stampede.Stampede, "refresh_early", lambda self, entry: True)
    refresher = threading.Thread(target=lambda: caches["kv"].get_or_set("x", slow_refresh, 60))
    refresher.start()
    assert refreshing.wait(5)
    assert kvcache.get_or_set("x", lambda: "unexpected", 60) == "old"  # served, not waiting
    release.set()
    refresher.join(5)
    monkeypatch.undo()
    assert kvcache.get("x") == "new"


@pytest.mark.parametrize("draw, refreshed", [(0.0, False), (0.5, True)])
def test_the_random_draw_is_the_only_chance_in_early_recomputation(draw, refreshed, monkeypatch):
    """XFetch at 0.01 s before expiry with delta 0.05 and beta 1: refreshed iff -ln(1 - u) * 0.05 >= 0.01."""
    monkeypatch.setattr(stampede, "uniform", lambda: draw)
    monkeypatch.setattr(cfkv_clock, "now", lambda: 1000.0)
    entry = Entry("v", 1000.01, 0.05)
    assert stampede.Stampede("default", beta=1.0, wait=1).refresh_early(entry) is refreshed
    assert stampede.Stampede("default", beta=0.0, wait=1).refresh_early(entry) is False  # beta 0: never early
