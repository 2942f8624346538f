"""urllib3 connections that keep an attempt's wall-clock end.

A read timeout bounds each socket read, not the whole answer: a server that drips
one byte a second could hold a call for ever. These connections read the status,
headers and body through a reader whose every recv waits at most until the end of
the attempt this thread is making (set with :func:`until`).
"""

import contextlib
import http.client
import io
import threading
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter

from .. import clock

# The wall-clock end of the attempt this thread is making, read by the
# connections' responses (urllib3 makes them in the thread that sends).
_attempt_state = threading.local()


class _DeadlineReader(io.RawIOBase):
    """A socket reader whose every recv waits at most until the attempt's end."""

    def __init__(self, raw: Any, sock: Any, ends: float, read_timeout: float | None) -> None:
        super().__init__()
        self._raw, self._sock, self._ends, self._read_timeout = raw, sock, ends, read_timeout

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def readinto(self, buffer: Any) -> int | None:
        left = self._ends - clock.monotonic()
        if left <= 0:
            raise TimeoutError("the attempt ran out of time")  # urllib3 makes it a ReadTimeoutError
        self._sock.settimeout(min(left, self._read_timeout) if self._read_timeout else left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading status, headers and body by the attempt's end."""

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        ends = getattr(_attempt_state, "ends", None)
        if ends is not None:
            self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, ends, _attempt_state.read_timeout))


_deadline_classes: dict[type, type] = {}


def _with_deadline(connection_class: type) -> type:
    """Return a subclass of urllib3's connection class whose responses keep the attempt's deadline."""
    if connection_class not in _deadline_classes:
        _deadline_classes[connection_class] = type(
            connection_class.__name__, (connection_class,), {"response_class": _DeadlineResponse})
    return _deadline_classes[connection_class]


class DeadlineAdapter(HTTPAdapter):
    """Give each pool deadline-keeping connections."""

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                        cert: Any = None) -> Any:
        pool: Any = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        if not getattr(pool, "_cfkv_ready", False):
            pool.ConnectionCls = _with_deadline(pool.ConnectionCls)
            pool._cfkv_ready = True
        return pool


@contextlib.contextmanager
def until(ends: float, read_timeout: float) -> Iterator[None]:
    """Make this thread's answers (status, headers and body) end by ``ends`` on clock.monotonic()."""
    _attempt_state.ends, _attempt_state.read_timeout = ends, read_timeout
    try:
        yield
    finally:
        _attempt_state.ends = None
