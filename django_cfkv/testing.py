"""Test helpers: a pytest plugin (fixtures ``cfkv_emulator``, ``cfkv``, ``cfkv_calls``)
and helpers for Django's TestCase.

The plugin is registered through the ``pytest11`` entry point and does nothing
unless a test asks for one of its fixtures.
"""

import tempfile
import uuid
from pathlib import Path

from .emulator.app import EmulatorApp
from .emulator.server import start_in_thread

try:
    import pytest
except ImportError:  # the unittest helpers work without pytest
    pytest = None

ACCOUNT_ID = "0" * 32


class RunningEmulator:
    """An emulator serving on a free loopback port, in a background thread."""

    def __init__(self, path=None, *, token="cfkv-test-token"):
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cfkv-emulator-")
            path = Path(self._tmp.name) / "kv.sqlite3"
        self.path = str(path)
        self.token = token
        self.account_id = ACCOUNT_ID
        self.app = EmulatorApp(self.path, token=token)
        self.server = start_in_thread(self.app)
        self.base_url = self.server.base_url

    def new_namespace_id(self):
        """Return a fresh namespace id (every id is its own empty namespace)."""
        return uuid.uuid4().hex

    def client(self, namespace_id=None, **kwargs):
        """Return a KVClient on ``namespace_id`` (a fresh one by default)."""
        from .client import KVClient

        kwargs.setdefault("base_url", self.base_url)
        return KVClient(self.account_id, namespace_id or self.new_namespace_id(), self.token, **kwargs)

    def alias_settings(self, namespace_id=None, **extra):
        """Return a CFKV alias dict pointing at this emulator."""
        return {"BACKEND": "cloudflare", "ACCOUNT_ID": self.account_id, "API_TOKEN": self.token,
                "NAMESPACE_ID": namespace_id or self.new_namespace_id(), "BASE_URL": self.base_url, **extra}

    def set_faults(self, **faults):
        """Inject faults: rate_429, retry_after, rate_503, slow_rate, slow_ms, latency_ms, bulk_unsuccessful."""
        self.app.faults.update(faults)

    def clear_faults(self):
        """Turn every injected fault (and added latency) off."""
        self.app.faults.reset(keep_latency=False)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()


if pytest is not None:

    @pytest.fixture(scope="session")
    def cfkv_emulator():
        """The KV REST emulator on a free 127.0.0.1 port for the whole test session."""
        emulator = RunningEmulator()
        try:
            yield emulator
        finally:
            emulator.stop()
