"""Fixtures of the command's tests: the default alias on each backend, the Worker gateway, the fault matrix."""

import pytest

from django_cfkv import get_kv
from tests.gateway.server import GatewayServer
from tests.support.faults import closed_port, emulator, fault, listener, slept  # noqa: F401 (fixtures)


@pytest.fixture
def local_alias(settings, tmp_path):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    return get_kv()


@pytest.fixture
def emulated_alias(cfkv):
    """The default alias on a fresh emulator namespace, with a fresh simulated API window."""
    return cfkv


@pytest.fixture(params=["local", "emulated"])
def kv(request):
    """The default alias on a fresh, empty namespace of each backend."""
    return request.getfixturevalue(f"{request.param}_alias")


@pytest.fixture(scope="package")
def gateway():
    """The Worker gateway (django_cfkv/gateway/worker.js) under Miniflare, with a token to look for."""
    with GatewayServer(token="tok-" + "s3cr3t" * 6) as server:
        yield server
