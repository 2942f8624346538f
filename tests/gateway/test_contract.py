"""The KV contract, unchanged, on KVClient + the Worker gateway under Miniflare, blocking and awaited."""

import pytest

from django_cfkv.client import KVClient
from tests.gateway.server import GatewayServer
from tests.kv.contract import KVContract


@pytest.fixture(scope="module")
def gateway():
    with GatewayServer() as gw:
        yield gw


@pytest.fixture
def kv(gateway, as_mode):
    """The gateway's one namespace, emptied before each test; the client blocking, or awaited."""
    client = KVClient(gateway.account_id, gateway.namespace_id, gateway.token, base_url=gateway.base_url)
    client.delete_many([k.name for k in client.iter_keys()])
    yield as_mode(client)
    client.close()


class TestGatewayContract(KVContract):
    pass
