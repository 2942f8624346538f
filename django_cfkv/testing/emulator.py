"""The emulator a test run talks to: :class:`RunningEmulator`, and the one the whole process shares."""

import atexit
import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import KVClient

ACCOUNT_ID = "0" * 32


class RunningEmulator:
    """An emulator serving on a free loopback port, in a background thread."""

    def __init__(self, path: "str | os.PathLike[str] | None" = None, *, token: str | None = "cfkv-test-token"
                 ) -> None:
        # Imported here: the pytest plugin imports this module in every test run, most of which never start one.
        from ..emulator.app import EmulatorApp
        from ..emulator.server import start_in_thread

        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cfkv-emulator-")
            path = Path(self._tmp.name) / "kv.sqlite3"
        self.path = str(path)
        self.token = token
        self.account_id = ACCOUNT_ID
        self.app = EmulatorApp(self.path, token=token)
        self.server = start_in_thread(self.app)
        self.base_url: str = self.server.base_url
        self.stopped = False

    def __repr__(self) -> str:
        return f"<RunningEmulator {self.base_url}>"

    def new_namespace_id(self) -> str:
        """Return a fresh namespace id (every id is its own empty namespace)."""
        return uuid.uuid4().hex

    def client(self, namespace_id: str | None = None, **kwargs: Any) -> "KVClient":
        """Return a KVClient on ``namespace_id`` (a fresh one by default)."""
        from ..client import KVClient

        kwargs.setdefault("base_url", self.base_url)
        return KVClient(self.account_id, namespace_id or self.new_namespace_id(), self.token or "", **kwargs)

    def alias_settings(self, namespace_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """Return a CFKV alias dict pointing at this emulator."""
        return {"BACKEND": "cloudflare", "ACCOUNT_ID": self.account_id, "API_TOKEN": self.token,
                "NAMESPACE_ID": namespace_id or self.new_namespace_id(), "BASE_URL": self.base_url, **extra}

    def copy_namespace(self, source_id: str, target_id: str) -> None:
        """Copy every entry (value, metadata, exact expiry) of one namespace into another."""
        from ..local import LocalNamespaces

        LocalNamespaces(self.path).copy_namespace(source_id, target_id)

    def reset_quota(self) -> None:
        """Start a fresh simulated 5-minute API window (what the Ratelimit header counts).

        Each test gets its own, as each gets a fresh namespace: otherwise a
        long suite would drive the header towards 0 and the client would log
        that the budget is low.
        """
        self.app.reset_quota()

    def set_faults(self, **faults: float) -> None:
        """Inject faults until cleared.

        Names: rate_429 (share of calls answered 429), retry_after (its
        Retry-After, seconds), rate_503, slow_rate and slow_ms (a share of
        slow answers), latency_ms (added to every call), bulk_unsuccessful
        (share of keys a bulk write or delete reports as not done).
        """
        self.app.faults.update(faults)

    def clear_faults(self) -> None:
        """Turn every injected fault (and added latency) off."""
        self.app.faults.reset()

    @contextlib.contextmanager
    def faults(self, **faults: float) -> Iterator["RunningEmulator"]:
        """Inject faults (as ``set_faults()``) inside a ``with`` block; restore the previous ones after."""
        saved = dict(self.app.faults.values)
        self.set_faults(**faults)
        try:
            yield self
        finally:
            self.app.faults.update(saved)

    def stop(self) -> None:
        """Stop serving and delete the emulator's data (safe to call twice)."""
        if self.stopped:
            return
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()


_shared: RunningEmulator | None = None
_shared_lock = threading.Lock()


def get_emulator() -> RunningEmulator:
    """Return the process-wide emulator, starting it on first use; it stops at interpreter exit."""
    return shared_emulator()[0]


def shared_emulator() -> tuple[RunningEmulator, bool]:
    """Return (the process-wide emulator, whether this call started it)."""
    global _shared
    with _shared_lock:
        if _shared is not None and not _shared.stopped:
            return _shared, False
        _shared = RunningEmulator()
        atexit.register(_shared.stop)
        return _shared, True
