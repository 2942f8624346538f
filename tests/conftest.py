import pytest

from django_cfkv import conf, nearcache
from django_cfkv.local import LocalKV
from django_cfkv.sessions import memory as session_memory

# Backends the KV contract suite runs on. The gateway (KVClient + Worker under
# Miniflare) joins them in tests/gateway/test_contract.py.
KV_BACKENDS = ["local", "emulator"]


@pytest.fixture(params=KV_BACKENDS)
def kv(request, tmp_path):
    """A fresh, empty namespace on each KV implementation."""
    if request.param == "local":
        yield LocalKV(tmp_path / "kv.sqlite3")
        return
    emulator = request.getfixturevalue("cfkv_emulator")
    client = emulator.client()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _fresh_clients():
    """Forget clients built from settings, near-cached values and deleted session keys, so no test sees another's."""
    conf.reset()
    nearcache.reset()
    session_memory.recently_deleted.clear()
    yield
    conf.reset()
    nearcache.reset()
    session_memory.recently_deleted.clear()
