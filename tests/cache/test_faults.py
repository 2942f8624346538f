"""The fault matrix on the cache: get/set/get_many/set_many under each of Cloudflare's documented
failures (tests/support/faults.py). For each the outcome is asserted: a typed error, or with
IGNORE_EXCEPTIONS the documented degradation, logged. Acknowledged writes are readable once the fault clears.
"""

import logging

import pytest

from django_cfkv.cache import CloudflareKVCache
from django_cfkv.exceptions import KVError
from tests.support.faults import FAULTS, RETRY, warned

CACHE_OPS = {
    "get": (lambda c: c.get("k", "default"), "default"),
    "set": (lambda c: c.set("k", {"v": 1}, 300), None),
    "get_many": (lambda c: c.get_many(["a", "b"]), {}),
    "set_many": (lambda c: c.set_many({"a": 1, "b": 2}, 300), ["a", "b"]),
}


def _cache_outcome(op, fault, ignore):
    if op == "get" and fault in ("malformed_200", "success_false_200"):
        return "miss"  # a value read is raw bytes: these bytes are not a cache entry, so a miss
    if ignore and FAULTS[fault][1]:
        return "degraded"
    return "raise"


@pytest.mark.parametrize("ignore", [False, True], ids=["raise", "ignore_exceptions"])
@pytest.mark.parametrize("op", CACHE_OPS)
def test_cache_under_fault(fault, caplog, op, ignore):
    outcome = _cache_outcome(op, fault, ignore)
    cache = CloudflareKVCache("faulty", {"OPTIONS": {"IGNORE_EXCEPTIONS": ignore}})
    call, fallback = CACHE_OPS[op]
    caplog.set_level(logging.WARNING)
    if outcome == "raise":
        with pytest.raises(KVError):
            call(cache)
        return
    result = call(cache)
    if outcome == "miss":
        assert result == "default"
        return
    assert result == fallback
    assert warned(caplog, "django_cfkv.cache"), "an ignored failure must be logged"


def test_cache_set_many_partial_failure_reports_exactly_the_keys_not_stored(settings, emulator):
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY}}
    cache = CloudflareKVCache("faulty", {})
    data = {f"key{i}": {"n": i} for i in range(40)}
    emulator.set_faults(bulk_unsuccessful=0.5)
    failed = cache.set_many(data, 300)
    emulator.clear_faults()
    assert failed and len(failed) < 40
    got = cache.get_many(list(data))
    assert set(got) == set(data) - set(failed)
    assert all(got[k] == data[k] for k in got)


def test_cache_acknowledged_sets_are_readable_after_random_faults(settings, emulator, slept):
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY}}
    cache = CloudflareKVCache("faulty", {})
    emulator.set_faults(rate_503=0.3, rate_429=0.1, retry_after=0)
    acked, raised = {}, 0
    for i in range(80):
        try:
            cache.set(f"k{i}", ["value", i], 300)
        except KVError:
            raised += 1
        else:
            acked[f"k{i}"] = ["value", i]
    emulator.clear_faults()
    assert raised and acked
    assert cache.get_many(list(acked)) == acked
