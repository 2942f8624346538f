"""``manage.py cfkv sweep`` under Cloudflare's documented failures (tests/support/faults.py): a command
error that names no secret, and never a live entry deleted; a rerun finishes what a partial failure left.
"""

import io

import pytest
from django.core.management import CommandError, call_command

from tests.support.faults import RETRY, TOKEN


def _sweep(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("cfkv", "sweep", "--alias", "faulty", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_sweep_under_fault_fails_with_a_command_error_and_deletes_nothing(fault):
    with pytest.raises(CommandError) as info:
        _sweep()
    assert TOKEN not in str(info.value) and str(info.value)


def _seed_sweepable(kv):
    import time

    past, future = time.time() - 3600, time.time() + 3600
    items = [{"key": f"cache:old{i}", "value": "x", "expiration_ttl": 600,
              "metadata": {"kind": "cache", "expires": past}} for i in range(30)]
    items += [{"key": f"cache:live{i}", "value": "x", "expiration_ttl": 7200,
               "metadata": {"kind": "cache", "expires": future}} for i in range(30)]
    items += [{"key": f"other{i}", "value": "x", "metadata": {"expires": past}} for i in range(5)]
    kv.put_many(items)
    return {i["key"] for i in items if "live" in i["key"] or i["key"].startswith("other")}


def test_sweep_with_bulk_partial_failure_says_so_and_a_rerun_finishes(settings, emulator, slept):
    client = emulator.client()
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(client.namespace_id), **RETRY}}
    keep = _seed_sweepable(client)
    emulator.set_faults(bulk_unsuccessful=0.5)
    with pytest.raises(CommandError, match="run the command again"):
        _sweep()
    emulator.clear_faults()
    assert keep <= {k.name for k in client.iter_keys()}  # nothing live was touched
    out, _ = _sweep()
    assert {k.name for k in client.iter_keys()} == keep
    client.close()


def test_sweep_under_random_faults_never_deletes_a_live_entry(settings, emulator, slept):
    client = emulator.client()
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(client.namespace_id), **RETRY}}
    keep = _seed_sweepable(client)
    emulator.set_faults(rate_503=0.3, bulk_unsuccessful=0.2)
    for _ in range(8):
        try:
            _sweep()
        except CommandError:
            continue
    emulator.clear_faults()
    names = {k.name for k in client.iter_keys()}
    assert keep <= names
    _sweep()
    assert {k.name for k in client.iter_keys()} == keep
    client.close()
