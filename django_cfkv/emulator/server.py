"""A small threaded HTTP/1.1 server for the emulator app.

Keep-alive is supported, so clients reuse connections as they do with
Cloudflare; a connection idle for ``idle_timeout`` seconds is closed, since
each one holds a thread. Each answer goes out in one write, and TCP_NODELAY is
set on every connection: without it a loopback server stalls each ``requests``
PUT by ~40 ms (Nagle's algorithm meeting a delayed ACK).

Request bodies are framed as HTTP/1.1 says: by Content-Length, or chunked
(decoded as the app reads it). The app reads a body only as far as the call's
route takes (see ``EmulatorApp.handle``); what it leaves unread is read and
dropped after the answer, so the next request on the connection starts where
it should, except after a body refused as too large, where the connection is
closed instead of reading it.
"""

import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any

from .. import limits
from ..local import LocalKV
from .app import EmulatorApp
from .wire import REASONS, Answer, Reply, error_answer, redact

_DIGITS = re.compile(r"[0-9]{1,20}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_LINE = 8192  # a chunk-size line or a trailer line
_DRAIN_PIECE = 64 * 1024


class MalformedBody(ValueError):
    """The body does not end as its framing says (a chunk that does not add up, an early end)."""


def _read(rfile: BufferedIOBase, size: int) -> bytes:
    try:
        data = rfile.read(size)
    except OSError as exc:  # the idle timeout, or a reset: the body will not come
        raise MalformedBody("the body stopped coming") from exc
    if len(data) < size:
        raise MalformedBody("the connection closed inside the body")
    return data


class _LengthBody:
    """A body of a declared length: reads never go past it."""

    def __init__(self, rfile: BufferedIOBase, length: int) -> None:
        self._rfile, self.left = rfile, length

    @property
    def done(self) -> bool:
        return self.left == 0

    def read(self, size: int = -1) -> bytes:
        want = self.left if size < 0 else min(size, self.left)
        data = _read(self._rfile, want) if want else b""
        self.left -= len(data)
        return data


class _ChunkedBody:
    """A chunked body (RFC 9112, section 7.1), decoded as it is read: reads never go past its end."""

    def __init__(self, rfile: BufferedIOBase) -> None:
        self._rfile, self._left, self.done = rfile, 0, False

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while not self.done and (size < 0 or len(out) < size):
            if self._left == 0:
                self._next_chunk()
                continue
            want = self._left if size < 0 else min(self._left, size - len(out))
            out += _read(self._rfile, want)
            self._left -= want
            if self._left == 0 and _read(self._rfile, 2) != b"\r\n":
                raise MalformedBody("a chunk is longer than its size says")
        return bytes(out)

    def _line(self) -> bytes:
        try:
            line = self._rfile.readline(_MAX_LINE + 1)
        except OSError as exc:
            raise MalformedBody("the body stopped coming") from exc
        if not line.endswith(b"\n"):
            raise MalformedBody("a chunk-size or trailer line does not end")
        return line

    def _next_chunk(self) -> None:
        line = self._line()
        size = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
        if not _CHUNK_SIZE.fullmatch(size):
            raise MalformedBody("a chunk size is not a hex number")
        self._left = int(size, 16)
        if self._left == 0:  # the last chunk: skip the trailer fields up to the empty line
            while line not in (b"\r\n", b"\n"):
                line = self._line()
            self.done = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cfkv-emulator"
    server: "EmulatorServer"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        head = self.command == "HEAD"
        try:
            body, length = self._body()
        except Reply as reply:  # framing the body cannot be read by: answer, then hang up
            self.close_connection = True
            return self._send(error_answer(reply), head)
        environ = {
            # HEAD is answered as GET without the body (the length stays the GET's).
            "REQUEST_METHOD": "GET" if head else self.command,
            "PATH_INFO": path,
            "RAW_URI": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": length,
            "HTTP_AUTHORIZATION": self.headers.get("Authorization", ""),
            "wsgi.input": body,
            "wsgi.input_terminated": isinstance(body, _ChunkedBody),
        }
        answer = self.server.app.handle(environ)
        if not body.done:
            self._skip_rest(body, refused=answer[0] == 413)
        self._send(answer, head)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

    def _body(self) -> "tuple[_LengthBody | _ChunkedBody, str]":
        """Return the body's reader and its declared length ("" for chunked); refuse framing it cannot read."""
        lengths = self.headers.get_all("Content-Length") or []
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None:
            if lengths:  # two framings: no way to know where the next request starts
                raise Reply(400, limits.INVALID_REQUEST, "invalid request: both Content-Length and "
                                                         "Transfer-Encoding")
            if coding.strip().lower() != "chunked":
                raise Reply(501, limits.INVALID_REQUEST, f"invalid request: transfer coding {coding[:32]!r} "
                                                         "is not supported (send chunked, or a Content-Length)")
            return _ChunkedBody(self.rfile), ""
        if len(set(lengths)) > 1 or (lengths and not _DIGITS.fullmatch(lengths[0].strip())):
            raise Reply(400, limits.INVALID_REQUEST, "invalid request: malformed Content-Length")
        length = int(lengths[0]) if lengths else 0
        return _LengthBody(self.rfile, length), str(length)

    def _skip_rest(self, body: "_LengthBody | _ChunkedBody", *, refused: bool) -> None:
        """Read and drop what the app left of the body, so the next request starts where it should.

        A body refused as too large is not read (that is the point of refusing it), and no more
        than the largest body any call takes is ever dropped: then the connection is closed.
        """
        if not refused:
            try:
                dropped = 0
                while not body.done and dropped <= limits.BULK_WRITE_MAX_BYTES:
                    dropped += len(body.read(_DRAIN_PIECE))
            except (MalformedBody, OSError):
                pass
        if not body.done:
            self.close_connection = True

    def _send(self, answer: Answer, head: bool) -> None:
        status, headers, body = answer
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        headers = {**headers, "Content-Length": str(len(body))}
        if self.close_connection:
            headers["Connection"] = "close"
        lines += [f"{name}: {value}" for name, value in headers.items() if value != ""]
        self.log_request(status, len(body))  # first, so the line is out when the client has its answer
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet unless verbose. Request lines name keys (a key may be a session
        # id) and query strings (prefixes and cursors hold keys): both redacted.
        # Values and tokens are never logged.
        if self.server.verbose:
            super().log_message("%s", redact(format % args))


class EmulatorServer(ThreadingHTTPServer):
    """The emulator's HTTP server: a thread per connection, ``base_url`` what a client points at."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    idle_timeout: float = 60  # seconds a connection may wait for (or within) a request

    def __init__(self, address: tuple[str, int], app: EmulatorApp, *, verbose: bool = False) -> None:
        self.app = app
        self.verbose = verbose
        self.thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            # Each connection has its own thread, and each thread its own SQLite
            # connection: close it now, not when the garbage collector finds it
            # (its files stay open till then, and they pile up under load).
            LocalKV(self.app.path).close_thread_connection()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/client/v4``: the ``BASE_URL`` of an alias served here."""
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # bound as (address, port)
        return f"http://{host}:{port}/client/v4"


def serve(app: EmulatorApp, host: str = "127.0.0.1", port: int = 8787, *, verbose: bool = False,
          on_ready: Callable[[EmulatorServer], None] | None = None) -> None:
    """Serve ``app`` until interrupted; ``on_ready(server)`` runs once it is listening."""
    server = EmulatorServer((host, port), app, verbose=verbose)
    if on_ready is not None:
        on_ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def start_in_thread(app: EmulatorApp, host: str = "127.0.0.1", port: int = 0) -> EmulatorServer:
    """Start a server on a background thread; return it (``.base_url``, ``.shutdown()``)."""
    server = EmulatorServer((host, port), app)
    thread = threading.Thread(target=server.serve_forever, name="cfkv-emulator", daemon=True)
    thread.start()
    server.thread = thread
    return server
