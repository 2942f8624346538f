"""Shared fixtures for the reliability suite: fake servers that misbehave on
the socket level, a recording emulator, and a transport that does not sleep."""

import socket
import threading

import pytest
import responses

from django_cfkv.client import KVClient
from django_cfkv.transport import Transport

# Shaped like Cloudflare's documented ids (shared reference, section 1).
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
NS = "0f2ac74b498b48028cb68387c421e279"
TOKEN = "cfkv-reliability-Zm9vYmFyLXNlY3JldA"
BASE = f"https://api.cloudflare.com/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{NS}"
MAX_RETRIES = 2


def envelope(result=None, **extra):
    """Return Cloudflare's success envelope around ``result``."""
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


def failure(code, message):
    """Return Cloudflare's failure envelope with one error."""
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


@pytest.fixture
def slept(monkeypatch):
    """Record the transport's waits instead of sleeping (waiting is not the point)."""
    waits = []
    monkeypatch.setattr(Transport, "_sleep", lambda self, seconds, deadline: waits.append(seconds))
    return waits


@pytest.fixture
def api():
    """A `responses` mock that lets unused registrations pass (the matrix shares them)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def fake_client(slept):
    """A KVClient on Cloudflare's URL (answered by `responses`) with small retry settings."""
    client = KVClient(ACCOUNT, NS, TOKEN, max_retries=MAX_RETRIES, timeout=0.5)
    yield client
    client.close()


class _Listener:
    """A loopback TCP listener whose behaviour on accept is ``mode``:
    "silent" (accept, never answer), "reset" (accept, read, send RST),
    "backlog" (never accept, backlog full: connects time out)."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0 if mode == "backlog" else 16)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self._stop = threading.Event()
        if mode == "backlog":
            for _ in range(3):  # fill the accept queue so further SYNs are dropped
                c = socket.socket()
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", self.port))
                except BlockingIOError:
                    pass
                self.held.append(c)
        else:
            self.sock.settimeout(0.1)
            self.thread = threading.Thread(target=self._accept, daemon=True)
            self.thread.start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/client/v4"

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if self.mode == "reset":
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                except OSError:
                    pass
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            else:
                self.held.append(conn)

    def close(self):
        self._stop.set()
        if self.mode != "backlog":
            self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def listener():
    """Factory of misbehaving loopback listeners, closed after the test."""
    made = []

    def make(mode):
        made.append(_Listener(mode))
        return made[-1]

    yield make
    for item in made:
        item.close()


@pytest.fixture
def closed_port():
    """Return a loopback port nobody listens on (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def seen_paths(cfkv_emulator, monkeypatch):
    """Record the (method, raw path) of every request the emulator answers."""
    paths = []
    original = cfkv_emulator.app.handle

    def handle(environ):
        paths.append((environ["REQUEST_METHOD"], environ.get("RAW_URI") or environ["PATH_INFO"]))
        return original(environ)

    monkeypatch.setattr(cfkv_emulator.app, "handle", handle)
    return paths


@pytest.fixture
def emulator(cfkv_emulator):
    """The session emulator with faults cleared and a fresh API window, before and after the test.

    Past 1,200 calls in its window the emulator says the quota is spent, which
    would turn one test's injected 429s into an account-wide block.
    """
    cfkv_emulator.clear_faults()
    cfkv_emulator.reset_quota()
    yield cfkv_emulator
    cfkv_emulator.clear_faults()
    cfkv_emulator.reset_quota()
