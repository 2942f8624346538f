"""A loopback HTTP server that answers the way a broken or hostile upstream would.

    def answer(conn, request):          # request: Request(method, path, headers, body)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n")
        drip(conn, b"ok", interval=0.5)

    with HostileServer(answer) as server:
        KVClient("a", "n", "t", base_url=server.base_url).get("k")

Each answer is written raw on the socket, so it can do what no framework would:
drip bytes, lie about sizes, never end. ``server.requests`` lists what came in,
``server.sent`` counts the bytes answers managed to send, ``server.accepted`` the
connections made to it and ``server.hung_up`` those the client has closed.
"""

import json
import socket
import threading
import time
from typing import NamedTuple


class Request(NamedTuple):
    method: str
    path: str
    headers: dict
    body: bytes


class HostileServer:
    """Serve ``answer(conn, request)`` on 127.0.0.1 in a thread per connection; stop on exit."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []
        self.sent = 0
        self.accepted = 0
        self.hung_up = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/client/v4"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._sock.close()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(conn)
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        reader = conn.makefile("rb")
        counting = _Counting(conn, self)
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    with self._lock:
                        self.hung_up += 1
                    return
                with self._lock:
                    self.requests.append(request)
                if self.answer(counting, request) is False:
                    return
        except OSError:  # the client hung up, as it should on a hostile answer
            return
        finally:
            reader.close()
            conn.close()

    def _count(self, n):
        with self._lock:
            self.sent += n


class _Counting:
    """The connection as answers see it: ``sendall`` counts what the client took."""

    def __init__(self, conn, server):
        self._conn, self._server = conn, server

    def sendall(self, data):
        view = memoryview(data)
        while view:
            n = self._conn.send(view[:65536])
            self._server._count(n)
            view = view[n:]

    def stopped(self):
        return self._server._stop.is_set()


def _read_request(reader):
    line = reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", 0) or 0))
    return Request(method, path, headers, body)


def drip(conn, data, interval):
    """Send ``data`` one byte at a time, ``interval`` seconds apart, until done or the server stops."""
    for i in range(len(data)):
        if conn.stopped():
            return
        conn.sendall(data[i:i + 1])
        time.sleep(interval)


def reply(conn, status=200, body=b"", headers=None):
    """Send a well-formed answer; a dict or list body is sent as JSON."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    conn.sendall(head.encode() + b"\r\n" + body)


def envelope(result=None, **extra):
    """Return Cloudflare's success envelope around ``result``."""
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}
