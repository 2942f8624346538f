"""Fixtures of the cache tests: caches on a fresh namespace of each KV implementation, the API calls
an operation makes, and the fault matrix (tests/support/faults.py)."""

import pytest
from django.core.cache import caches

from django_cfkv.cache import CloudflareKVCache
from tests.support.faults import closed_port, emulator, fault, listener, slept  # noqa: F401 (fixtures)

ALIAS = "default"


@pytest.fixture(params=["local", "emulator"])
def backend(request, settings, tmp_path):
    """Point the "default" CFKV alias at a fresh namespace of each backend; return the backend's name.

    The emulator's client makes no retries: a fault injected by a test is its answer at once.
    """
    if request.param == "local":
        config = {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}
    else:
        config = request.getfixturevalue("cfkv_emulator").alias_settings(MAX_RETRIES=0)
    settings.CFKV = {**settings.CFKV, ALIAS: config}
    return request.param


@pytest.fixture
def on_emulator(settings, cfkv_emulator):
    """Point the "default" CFKV alias at a fresh emulator namespace (no retries); return the emulator."""
    settings.CFKV = {**settings.CFKV, ALIAS: cfkv_emulator.alias_settings(MAX_RETRIES=0)}
    return cfkv_emulator


@pytest.fixture
def make_cache(backend):
    """Build a CloudflareKVCache on the "default" alias, on each backend: ``make_cache(KEY_PREFIX=...)``."""
    def make(**params):
        return CloudflareKVCache(ALIAS, params)

    make.backend = backend
    return make


@pytest.fixture
def emulator_cache(on_emulator):
    """Build a CloudflareKVCache on the "default" alias, on the emulator only."""
    return lambda **params: CloudflareKVCache(ALIAS, params)


@pytest.fixture
def kvcache(backend, settings):
    """``caches["kv"]``, a CloudflareKVCache (KEY_PREFIX "app", VERSION 2) on each backend, as Django builds it."""
    settings.CACHES = {**settings.CACHES, "kv": {"BACKEND": "django_cfkv.cache.CloudflareKVCache",
                                                 "LOCATION": ALIAS, "KEY_PREFIX": "app", "VERSION": 2}}
    yield caches["kv"]
    caches["kv"].clear()


@pytest.fixture
def calls_of(cfkv_calls):
    """Return ``calls_of(operation)``: the KV API calls ``operation()`` made, by endpoint."""
    def calls(operation):
        cfkv_calls.reset()
        operation()
        return cfkv_calls.counts

    return calls
