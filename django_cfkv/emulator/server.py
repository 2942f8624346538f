"""A small threaded HTTP/1.1 server for the emulator app.

Keep-alive is supported, so clients reuse connections as they do with
Cloudflare; a connection idle for ``idle_timeout`` seconds is closed, since
each one holds a thread. Each answer goes out in one write, and TCP_NODELAY is
set on every connection: without it a loopback server stalls each ``requests``
PUT by ~40 ms (Nagle's algorithm meeting a delayed ACK).
"""

import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..local import LocalKV
from .app import REASONS, redact


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cfkv-emulator"

    def setup(self):
        self.timeout = self.server.idle_timeout  # applied to the socket by StreamRequestHandler
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        head = self.command == "HEAD"
        environ = {
            # HEAD is answered as GET without the body (the length stays the GET's).
            "REQUEST_METHOD": "GET" if head else self.command,
            "PATH_INFO": path,
            "RAW_URI": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "HTTP_AUTHORIZATION": self.headers.get("Authorization", ""),
            "wsgi.input": io.BytesIO(self.rfile.read(length) if length else b""),
        }
        status, headers, body = self.server.app.handle(environ)
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        headers = {**headers, "Content-Length": str(len(body))}
        lines += [f"{name}: {value}" for name, value in headers.items() if value != ""]
        self.log_request(status, len(body))  # first, so the line is out when the client has its answer
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
        self.wfile.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format, *args):
        # Quiet unless verbose. Request lines name keys (a key may be a session
        # id) and query strings (prefixes and cursors hold keys): both redacted.
        # Values and tokens are never logged.
        if self.server.verbose:
            super().log_message("%s", redact(format % args))


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    idle_timeout = 60  # seconds a connection may wait for (or within) a request

    def __init__(self, address, app, *, verbose=False):
        self.app = app
        self.verbose = verbose
        super().__init__(address, _Handler)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            # Each connection has its own thread, and each thread its own SQLite
            # connection: close it now, not when the garbage collector finds it
            # (its files stay open till then, and they pile up under load).
            LocalKV(self.app.path).close_thread_connection()

    @property
    def base_url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/client/v4"


def serve(app, host="127.0.0.1", port=8787, *, verbose=False, on_ready=None):
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


def start_in_thread(app, host="127.0.0.1", port=0):
    """Start a server on a background thread; return it (``.base_url``, ``.shutdown()``)."""
    server = EmulatorServer((host, port), app)
    thread = threading.Thread(target=server.serve_forever, name="cfkv-emulator", daemon=True)
    thread.start()
    server.thread = thread
    return server
