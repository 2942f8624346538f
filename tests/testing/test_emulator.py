"""django_cfkv.testing.emulator: the emulator a test run uses, its faults and its namespace copies."""

import os
import subprocess
import sys

import pytest

from django_cfkv import clock
from django_cfkv.exceptions import KVAPIError, KVValueError


def test_import_touches_nothing():
    # pytest imports the plugin in every run of a project that installs django-cfkv.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = ("import threading, django_cfkv.testing, django_cfkv.testing.plugin; "
            "from django_cfkv.testing import emulator; from django.conf import settings; "
            "print(settings.configured, emulator._shared, threading.active_count())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None", "1"]


def test_faults_context_restores_the_faults_before_it(cfkv_emulator):
    client = cfkv_emulator.client(max_retries=0)
    client.put("k", b"v")
    cfkv_emulator.set_faults(slow_ms=5)
    try:
        with cfkv_emulator.faults(rate_503=1.0):
            with pytest.raises(KVAPIError) as raised:
                client.get("k")
            assert raised.value.status == 503
            with cfkv_emulator.faults(rate_503=0.0):
                assert client.get("k") == b"v"
            assert cfkv_emulator.app.faults["rate_503"] == 1.0
        assert cfkv_emulator.app.faults.values == {**cfkv_emulator.app.faults.FIELDS, "slow_ms": 5}
        assert client.get("k") == b"v"
    finally:
        cfkv_emulator.clear_faults()


def test_faults_context_refuses_unknown_names(cfkv_emulator):
    with pytest.raises(ValueError, match="rate_500"):
        with cfkv_emulator.faults(rate_500=1.0):
            pass
    assert cfkv_emulator.app.faults.values == cfkv_emulator.app.faults.FIELDS


def test_copy_namespace_keeps_metadata_and_exact_expiry(cfkv_emulator, monkeypatch):
    source, target = cfkv_emulator.new_namespace_id(), cfkv_emulator.new_namespace_id()
    start = clock.now()
    expires = int(start) + 120
    cfkv_emulator.app.store(source).put("k", b"v", expiration=expires, metadata={"kind": "cache"})
    monkeypatch.setattr(clock, "now", lambda: start + 90)
    with pytest.raises(KVValueError):  # 30 s left: more than any write may keep, so a copy cannot be a put
        cfkv_emulator.app.store(target).put("k", b"v", expiration=expires)
    cfkv_emulator.copy_namespace(source, target)
    copied = cfkv_emulator.app.store(target).get_with_metadata("k")
    assert (copied.value, copied.metadata, copied.expiration) == (b"v", {"kind": "cache"}, expires)
    cfkv_emulator.app.store(target).put("k", b"changed")
    assert cfkv_emulator.app.store(source).get("k") == b"v"
