"""The loopback guard: while an override is active, a KV call bound off loopback is stopped before it is sent.

The guard is one of the transport's request hooks (``django_cfkv.transport.request_hooks``), installed
while at least one :class:`Watch` is running (one per active override). Each stopped call is recorded on
the innermost watch, which tells at its end which of them the test never saw: code that treats any KV
failure as a miss would otherwise hide a call that tried to leave the machine.
"""

import contextlib
import ipaddress
import threading
from collections.abc import Iterable
from types import CodeType
from urllib.parse import urlsplit

from .. import transport

BLOCKED_HINT = (
    "Inside the cfkv fixture and override_cfkv() every CFKV alias points at the local emulator, so this "
    "call came from a client made another way (KVClient(...) built by hand, or kept from before the "
    "override). Get clients with django_cfkv.get_kv(alias) when they are used, or build them from "
    "settings.CFKV."
)


class KVNetworkBlocked(AssertionError):
    """A KV API call inside an override was bound for a host other than loopback."""

    __module__ = "django_cfkv.testing"  # its public home: the name test reports show

    host: str = ""


def is_loopback(host: str) -> bool:
    """Return True if ``host`` (a URL's host name) is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Watch:
    """The calls the guard stopped while one override was the innermost active one.

    ``test_code``: code objects of the test (and of wrappers that call it): a
    stopped call whose error passed through one of them has been reported.
    """

    def __init__(self, test_code: Iterable[CodeType | None] = ()) -> None:
        self.test_code = {code for code in test_code if code is not None}
        self.stopped: list[KVNetworkBlocked] = []

    def start(self) -> None:
        """Become the innermost watch; the first one installs the guard."""
        with _lock:
            if not _watches:
                transport.request_hooks.append(guard)
            _watches.append(self)

    def stop(self) -> bool:
        """Stop watching; return True when this was the last watch (the guard is removed)."""
        with _lock:
            _watches.remove(self)
            last = not _watches
            if last:
                with contextlib.suppress(ValueError):
                    transport.request_hooks.remove(guard)
        return last

    def unseen(self) -> list[KVNetworkBlocked]:
        """Return the stopped calls whose error never reached the test, and forget them all."""
        unseen = [exc for exc in self.stopped if not _reached(exc, self.test_code)]
        self.stopped = []  # their tracebacks hold frames
        return unseen


_watches: list[Watch] = []  # innermost last
_lock = threading.Lock()


def guard(method: str, url: str) -> None:
    """Stop a KV call bound for a host other than loopback (the transport request hook)."""
    __tracebackhide__ = True  # pytest: show the user's test, not this helper
    host = urlsplit(url).hostname or ""
    if is_loopback(host):
        return
    error = KVNetworkBlocked(f"A KV API call to {host} was stopped: tests must not leave 127.0.0.1. "
                             + BLOCKED_HINT)
    error.host = host
    with _lock:
        if _watches:
            _watches[-1].stopped.append(error)
    raise error


def unseen_error(unseen: list[KVNetworkBlocked]) -> KVNetworkBlocked:
    """Return the error that reports stopped calls the code under test caught before the test saw them."""
    hosts = ", ".join(sorted({exc.host for exc in unseen}))
    return KVNetworkBlocked(
        f"{len(unseen)} KV API call(s) to {hosts} were stopped during this test, and the code under "
        "test caught the error before it reached the test. " + BLOCKED_HINT
    )


def _reached(exc: BaseException, codes: set[CodeType]) -> bool:
    """Return True if ``exc`` propagated through a frame running one of ``codes``."""
    tb = exc.__traceback__
    if tb is None:  # unittest's assertRaises() strips it from what it caught
        return True
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False
