"""Fault fixtures shared by the KV layer's tests (tests/kv/) and the features' fault tests: fake servers that
misbehave on the socket level, a recording emulator, a transport that does not sleep, and the fault
matrix (``fault``): one of Cloudflare's documented failures behind the CFKV alias "faulty".

A folder's conftest.py imports the fixtures it uses from here."""

import logging
import socket
import threading

import pytest
import responses

from django_cfkv import clock
from django_cfkv.client import KVClient

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
    """Record the package's waits (backoffs, Retry-After) instead of sleeping: waiting is not the point.

    The package waits through django_cfkv.clock.sleep (and clock.asleep in async code), its one
    clock seam: moving it leaves the ``time`` module that pytest, Django and other threads share alone.
    """
    waits = []

    async def asleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(clock, "sleep", waits.append)
    monkeypatch.setattr(clock, "asleep", asleep)
    return waits


@pytest.fixture
def api():
    """Cloudflare's API faked with `responses`: every answer registered must be asked for."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def loose_api():
    """As ``api``, for matrices that register an answer for every method and use some."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def fake_client(slept, monkeypatch):
    """A KVClient on Cloudflare's URL (answered by `responses`) that retries MAX_RETRIES times,
    its waits recorded (``slept``) and its backoff's jitter fixed at none."""
    client = KVClient(ACCOUNT, NS, TOKEN, max_retries=MAX_RETRIES)
    monkeypatch.setattr(client.transport.policy, "jitter", lambda span: 0.0)
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


# The fault matrix: one of Cloudflare's documented failures (shared reference, sections 1-4) served by the
# emulator's fault injection, by `responses`, or by a misbehaving loopback socket.

RETRY = {"MAX_RETRIES": 1, "TIMEOUT": 0.15}

# name: (where the fault comes from, is it transient (IGNORE_EXCEPTIONS hides it) per the error tree)
FAULTS = {
    "429_retry_after": ("emulator", True),
    "429_bare": ("emulator", True),
    "503": ("emulator", True),
    "500": ("scripted", True),
    "502": ("scripted", True),
    "504": ("scripted", True),
    "read_timeout": ("socket", True),
    "connect_timeout": ("socket", True),
    "refused": ("socket", True),
    "reset": ("socket", True),
    "401": ("scripted", False),
    "403": ("emulator", False),
    "missing_namespace": ("emulator", False),
    "malformed_200": ("scripted", True),  # an answer no KV gives (KVMalformedResponseError): as a 5xx
    "success_false_200": ("scripted", False),
}


@pytest.fixture(params=list(FAULTS))
def fault(request, settings, emulator, listener, closed_port, slept):
    """Point CFKV alias "faulty" at a KV that fails with the parametrized fault."""
    name = request.param
    alias = {**emulator.alias_settings(), **RETRY}
    if name == "429_retry_after":
        emulator.set_faults(rate_429=1.0, retry_after=1)
    elif name == "429_bare":
        emulator.set_faults(rate_429=1.0, retry_after=-1)
    elif name == "503":
        emulator.set_faults(rate_503=1.0)
    elif name == "403":
        alias["API_TOKEN"] = "a-token-the-emulator-refuses"
    elif name == "missing_namespace":
        alias["NAMESPACE_ID"] = "n" * 40  # no namespace id is that long
    elif name == "read_timeout":
        alias["BASE_URL"] = listener("silent").base_url
    elif name == "connect_timeout":
        alias["BASE_URL"] = listener("backlog").base_url
    elif name == "reset":
        alias["BASE_URL"] = listener("reset").base_url
    elif name == "refused":
        alias["BASE_URL"] = f"http://127.0.0.1:{closed_port}/client/v4"
    api = None
    if FAULTS[name][0] == "scripted":  # answers the emulator never gives, from a loopback server
        from tests.support.scripted import ScriptedAPI

        status, body = {
            "500": (500, failure(10001, "service temporarily unavailable")),
            "502": (502, "<html>502 Bad Gateway</html>"),
            "504": (504, "<html>504 Gateway Time-out</html>"),
            "401": (401, failure(10000, "Authentication error")),
            "malformed_200": (200, "<html>Welcome to the captive portal</html>"),
            "success_false_200": (200, failure(10001, "service temporarily unavailable")),
        }[name]
        api = ScriptedAPI(strict=False).__enter__()
        api.every(status, **({"body": body} if isinstance(body, str) else {"json": body}))
        alias.update(ACCOUNT_ID=ACCOUNT, NAMESPACE_ID=NS, API_TOKEN=TOKEN, BASE_URL=api.base_url)
    settings.CFKV = {**settings.CFKV, "faulty": alias}
    try:
        yield name
    finally:
        if api is not None:
            api.__exit__(None, None, None)
        emulator.clear_faults()


def warned(caplog, logger_name):
    """Return the records at WARNING or above that ``logger_name`` (or a child) logged."""
    return [r for r in caplog.records if r.name.startswith(logger_name) and r.levelno >= logging.WARNING]
