"""Fixtures of the KV layer's tests: a fresh namespace on each KV implementation, and the shared ones
(Cloudflare's API faked with `responses`, a client on it, misbehaving sockets, the emulator)."""

import pytest

from django_cfkv.local import LocalKV
from django_cfkv.transport import sync as transport_sync
from tests.support.faults import (  # noqa: F401 (fixtures)
    api,
    closed_port,
    emulator,
    fake_client,
    listener,
    loose_api,
    seen_paths,
    slept,
)
from tests.support.scripted import loose_scripted, scripted, scripted_client  # noqa: F401 (fixtures)

# Backends the KV contract suite runs on, each blocking and through its async twins (an
# "-async" backend: every call awaits aget, aput... on the test's event loop; "-threads": the
# REST client's twins as they run without the async extra, in worker threads). The gateway
# (KVClient + Worker under Miniflare) joins them in tests/gateway/test_contract.py.
KV_BACKENDS = ["local", "emulator", "local-async", "emulator-async", "emulator-threads"]


@pytest.fixture(params=KV_BACKENDS)
def kv(request, tmp_path, awaited, monkeypatch):
    """A fresh, empty namespace on each KV implementation, blocking or awaited."""
    backend, _, how = request.param.partition("-")
    if how == "threads":
        monkeypatch.setattr(transport_sync, "native_async", lambda: False)
    made = LocalKV(tmp_path / "kv.sqlite3") if backend == "local" else request.getfixturevalue("cfkv_emulator").client()
    yield awaited(made) if how else made
    if backend == "emulator":
        made.close()
