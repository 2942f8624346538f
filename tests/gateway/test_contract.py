"""The KV contract, unchanged, on KVClient + the Worker gateway under Miniflare."""

import pytest

from django_cfkv.client import KVClient
from tests.gateway.server import GatewayServer
from tests.kv.contract import KVContract


@pytest.fixture(scope="module")
def gateway():
    with GatewayServer() as gw:
        yield gw


@pytest.fixture
def kv(gateway):
    """The gateway's one namespace, emptied before each test."""
    client = KVClient(gateway.account_id, gateway.namespace_id, gateway.token, base_url=gateway.base_url)
    client.delete_many([k.name for k in client.iter_keys()])
    yield client
    client.close()


class TestGatewayContract(KVContract):
    pass
