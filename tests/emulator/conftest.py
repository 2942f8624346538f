"""Fixtures of the emulator's tests: a namespace on the shared emulator, and servers of their own."""

import threading

import pytest
import requests

from django_cfkv.emulator import EmulatorApp
from django_cfkv.emulator.server import EmulatorServer


@pytest.fixture
def ns(cfkv_emulator):
    """(session with the token, URL of a fresh namespace) on the shared emulator, in a fresh API window."""
    cfkv_emulator.reset_quota()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {cfkv_emulator.token}"
    base = f"{cfkv_emulator.base_url}/accounts/{cfkv_emulator.account_id}/storage/kv/namespaces/" \
           f"{cfkv_emulator.new_namespace_id()}"
    yield session, base
    session.close()
    cfkv_emulator.clear_faults()


@pytest.fixture
def own_server(tmp_path):
    """A server of its own, for tests that change how it runs."""
    started = []

    def start(app=None, **attributes):
        server = EmulatorServer(("127.0.0.1", 0), app or EmulatorApp(tmp_path / "kv.sqlite3"))
        for name, value in attributes.items():
            setattr(server, name, value)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def namespaces(own_server):
    """(session, url of the namespace collection) on an emulator of its own, so no other test's namespaces show."""
    server = own_server()
    with requests.Session() as s:
        yield s, f"{server.base_url}/accounts/a/storage/kv/namespaces"
