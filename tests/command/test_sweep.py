"""manage.py cfkv sweep: what it deletes, what it reads, what it costs, and finishing an interrupted run."""

import io
import json
import math
import time

import pytest
from django.core.management.base import CommandError

from django_cfkv import maintenance
from tests.command.helpers import HOUR, run, run_json, seed


def test_sweep_deletes_only_our_expired_entries(kv):
    now = seed(kv)
    kv.put("cache:recent", "{}", expiration_ttl=HOUR,
           metadata={"kind": "cache", "expires": now - 10})  # within the grace period
    kv.put("foreign", "x", expiration_ttl=HOUR, metadata={"expires": now - 600})  # not ours
    report = run_json("sweep", "--dry-run")
    assert report["dry_run"] is True and report["found"] == 1 and report["deleted"] == 0
    assert kv.get("session:old") is not None
    report = run_json("sweep")
    assert report["by_kind"]["sessions"] == {"expired": 1, "orphaned": 0}
    assert report["deleted"] == 1 and report["scanned"] == 7
    assert kv.get("session:old") is None
    assert kv.get("cache:recent") is not None and kv.get("foreign") is not None
    assert run_json("sweep")["found"] == 0


def test_sweep_kind_filter(kv):
    now = time.time()
    for name, kind in [("s", "session"), ("c", "cache"), ("r", "ratelimit")]:
        kv.put(name, "{}", expiration_ttl=HOUR, metadata={"kind": kind, "expires": now - 600})
    assert run_json("sweep", "--kind", "cache")["deleted"] == 1
    assert kv.get("c") is None and kv.get("s") is not None
    out = run("sweep")
    assert "Deleted 2" in out
    assert kv.get("s") is None and kv.get("r") is None


def test_sweep_reads_worker_sessions_that_carry_expiry_in_the_value(kv):
    now = time.time()
    kv.put("session:w-old", json.dumps({"userId": 1, "expiresAt": int((now - 600) * 1000)}))
    kv.put("session:w-iso", json.dumps({"userId": 2, "expiresAt": "2001-01-01T00:00:00Z"}))
    kv.put("session:w-new", json.dumps({"userId": 3, "expiresAt": int((now + 600) * 1000)}))
    kv.put("session:opaque", "signed:abc")
    report = run_json("sweep")
    assert report["deleted"] == 2 and report["values_read"] == 4
    assert [r["key"] for r in run_json("ls")["keys"]] == ["session:opaque", "session:w-new"]


def test_sweep_20000_keys_api_calls(emulated_alias, cfkv_calls):
    kv, now = emulated_alias, time.time()
    items = [{"key": f"cache:{i:05}", "value": "{}", "expiration_ttl": HOUR,
              "metadata": {"kind": "cache", "expires": now - 600 if i % 5 else now + HOUR}}
             for i in range(20_000)]
    kv.put_many(items)
    cfkv_calls.reset()
    report = run_json("sweep")
    expired = 16_000
    assert report["deleted"] == expired and report["scanned"] == 20_000 and report["values_read"] == 0
    assert report["api_calls"] == cfkv_calls.counts == {"list": math.ceil(20_000 / 1000),
                                                        "bulk_delete": math.ceil(expired / 10_000)}
    assert run_json("stats")["keys"] == 4_000


def test_interrupted_sweep_is_finished_by_the_next(local_alias):
    kv, now = local_alias, time.time()
    kv.put_many([{"key": f"s{i:04}", "value": "{}", "expiration_ttl": HOUR,
                  "metadata": {"kind": "session", "expires": now - 600}} for i in range(2500)])

    def interrupt(scanned, deleted):
        if deleted:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        maintenance.Sweep(kv, batch_size=300, progress=interrupt).run()
    left = len(list(kv.iter_keys()))
    assert 0 < left < 2500
    assert run_json("sweep")["deleted"] == left
    assert list(kv.iter_keys()) == []


def test_sweep_that_leaves_keys_says_to_run_again(emulated_alias, cfkv_emulator):
    kv, now = emulated_alias, time.time()
    kv.put_many([{"key": f"c{i:03}", "value": "{}", "expiration_ttl": HOUR,
                  "metadata": {"kind": "cache", "expires": now - 600}} for i in range(50)])
    err = io.StringIO()
    with cfkv_emulator.faults(bulk_unsuccessful=0.5):
        with pytest.raises(CommandError, match="keys were left; run the command again to finish"):
            run("sweep", stderr=err)
    assert "Stopped after scanning 50 keys" in err.getvalue()
    left = len(list(kv.iter_keys()))
    assert 0 < left < 50
    assert run_json("sweep")["deleted"] == left
    assert list(kv.iter_keys()) == []


@pytest.mark.parametrize("value", ["[" * 100_000, '{"expiresAt": 1' + "0" * 400 + "}", '{"expiresAt": true}'],
                         ids=["nested", "huge", "bool"])
def test_sweep_reads_past_a_planted_session_value_it_cannot_use(kv, value):
    """A namespace writer's session value: no expiry read from it, and the sweep goes on to the rest."""
    now = time.time()
    kv.put("session:planted", value)
    kv.put("session:ended", json.dumps({"userId": "1", "expiresAt": (now - 3600) * 1000}))
    report = run_json("sweep", "--kind", "sessions")
    assert report["deleted"] == 1 and kv.get("session:ended") is None and kv.get("session:planted") is not None
