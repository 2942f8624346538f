"""A hostile or broken upstream cannot hang the client, fill its memory or loop it forever.

Each test runs a real loopback server (tests/support/hostile.py) that answers
the way an attacker in BASE_URL's place, or a broken proxy, would: dripping
bytes, sending more than KV can hold, or listing keys in circles. The client's
tests run on the blocking client and on the async one (``as_mode``).
"""

import gzip
import io
import json
import time

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_cfkv import clock, inspect, limits, types
from django_cfkv.client import KVClient
from django_cfkv.exceptions import (
    KVAPIError,
    KVConnectionError,
    KVError,
    KVMalformedResponseError,
    KVRateLimitError,
    KVTimeout,
)
from django_cfkv.sessions import SessionStore
from django_cfkv.transport import ResponseTooLargeError
from tests.support.faults import ACCOUNT, NS, TOKEN
from tests.support.hostile import HostileServer, drip, envelope, reply

MiB = 1024 * 1024


@pytest.fixture
def client_on(as_mode):
    """Make KVClients on a server (no retries unless asked), blocking or awaited; close them after the test."""
    made = []

    def make(server, **kwargs):
        kwargs.setdefault("max_retries", 0)
        made.append(KVClient(ACCOUNT, NS, TOKEN, base_url=server.base_url, **kwargs))
        return as_mode(made[-1])

    yield make
    for client in made:
        client.close()


def _timed(call):
    started = time.monotonic()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - returned for the test to judge
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


# (a) A deadline by the wall clock, for each attempt and for the whole call.

def _drip_body(conn, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 24\r\n\r\n")
    drip(conn, b"x" * 24, interval=0.5)  # 12 s in all, every byte well inside the 1 s read timeout
    return False


def _drip_head(conn, request):
    drip(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", interval=0.5)
    return False


@pytest.mark.parametrize("answer", [_drip_body, _drip_head], ids=["body", "headers"])
def test_a_dripped_answer_is_cut_at_the_attempts_deadline(client_on, answer):
    """TIMEOUT=(1, 1) bounds an attempt to 2 s of wall clock, however the bytes are spaced."""
    with HostileServer(answer) as server:
        client = client_on(server, timeout=(1, 1))
        elapsed, error = _timed(lambda: client.get("k"))
    assert isinstance(error, KVTimeout), error
    assert elapsed < 4, elapsed  # the drip would take 12 s


def _silent(conn, request):
    for _ in range(30):  # says nothing for 3 s, then hangs up
        if conn.stopped():
            break
        time.sleep(0.1)
    return False


def test_a_silent_server_is_left_after_the_read_timeout_not_the_whole_window(client_on):
    """TIMEOUT=(5, 0.3): the attempt's window is 5.3 s, but an answer that does not start within the read
    timeout ends the attempt at 0.3 s, as requests' read timeout does."""
    with HostileServer(_silent) as server:
        client = client_on(server, timeout=(5, 0.3))
        elapsed, error = _timed(lambda: client.get("k"))
    assert isinstance(error, KVTimeout), error
    assert elapsed < 2, elapsed


def test_the_call_deadline_covers_every_retry(client_on, slept):
    """DEADLINE bounds the whole call: attempts that each stay within their timeout cannot add up."""
    with HostileServer(_drip_body) as server:
        client = client_on(server, timeout=(1, 1), max_retries=10, deadline=3)
        elapsed, error = _timed(lambda: client.get("k"))
    assert isinstance(error, KVTimeout), error
    assert 2 <= len(server.requests) <= 3  # 2 s per attempt: the second is cut at the 3 s deadline
    assert elapsed < 5, elapsed


def test_a_slow_but_steady_answer_within_the_deadline_succeeds(client_on):
    def answer(conn, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        drip(conn, b"data", interval=0.1)

    with HostileServer(answer) as server:
        client = client_on(server, timeout=(1, 1))
        assert client.get("k") == b"data"


# (b) An answer larger than any KV can give is refused while it streams.

def _huge(with_length):
    def answer(conn, request):
        size = 64 * MiB
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {size}\r\n" if with_length else "Connection: close\r\n"
        conn.sendall(head.encode() + b"\r\n")
        chunk = b"[" + b"0," * (MiB // 2 - 1) + b"0]"
        for _ in range(64):
            if conn.stopped():
                break
            conn.sendall(chunk)
        return False
    return answer


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "close-delimited"])
@pytest.mark.parametrize("op", ["get", "get_metadata", "list_keys", "get_many"])
def test_a_64_mib_answer_is_never_read_whole(client_on, op, with_length):
    with HostileServer(_huge(with_length)) as server:
        client = client_on(server)
        call = {"get": lambda: client.get("k"), "get_metadata": lambda: client.get_metadata("k"),
                "list_keys": lambda: client.list_keys(), "get_many": lambda: client.get_many(["k"])}[op]
        with pytest.raises(KVAPIError) as info:
            call()
        time.sleep(0.2)  # let the server notice the hang-up
    assert isinstance(info.value, ResponseTooLargeError)
    # Of each answer, at most KV's largest plus what socket buffers held ever left the server: on
    # loopback they autotune to several MiB each way (more when the reader is fast, as aiohttp is),
    # far less than the 38 MiB that reading the answer whole would add.
    # (get_many reads a key whose bulk answer is too large alone: two answers.)
    assert len(server.requests) == (2 if op == "get_many" else 1)
    assert server.sent < len(server.requests) * (limits.MAX_RESPONSE_BYTES + 16 * MiB)
    if with_length:
        assert server.sent < 16 * MiB  # refused on the header alone


def _bomb(conn, request):
    """A small compressed answer, truthful about its own length, that inflates to 64 MiB."""
    body = gzip.compress(b"\0" * 64 * MiB, compresslevel=9)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Encoding: gzip\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return False


def test_a_compressed_answer_is_capped_as_it_inflates(client_on):
    """A declared length within the cap is read whole only when nothing inflates it: the cap counts
    the bytes the caller would be given, not the bytes on the wire."""
    with HostileServer(_bomb) as server:
        client = client_on(server)
        with pytest.raises(ResponseTooLargeError):
            client.get("k")


def _encoded(encoding, body):
    def answer(conn, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Encoding: " + encoding
                     + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return False
    return answer


ODD_ENCODINGS = {
    "x-gzip": (b"x-gzip", gzip.compress(b"value")),
    "gzip twice": (b"gzip, gzip", gzip.compress(gzip.compress(b"value"))),
    "br, not asked for": (b"br", b"\x0b\x02\x80value\x03"),
}


@pytest.mark.parametrize(("encoding", "body"), ODD_ENCODINGS.values(), ids=ODD_ENCODINGS)
def test_an_answer_in_an_encoding_not_asked_for_is_never_taken_for_the_value(client_on, encoding, body):
    """Only gzip and deflate are asked for (both HTTP libraries inflate them alike); requests inflates x-gzip
    and stacked gzip where aiohttp hands the compressed bytes over: neither client reads such an answer."""
    with HostileServer(_encoded(encoding, body)) as server:
        client = client_on(server)
        with pytest.raises(KVError) as info:
            client.get("k")
        assert "value" not in str(info.value)
        assert all(r.headers.get("accept-encoding") == "gzip, deflate" for r in server.requests)
        if encoding != b"br":  # aiohttp refuses br itself, before the client sees it (a KVConnectionError)
            assert isinstance(info.value, KVMalformedResponseError) and len(server.requests) == 1


def test_an_empty_content_encoding_is_no_encoding(client_on):
    with HostileServer(_encoded(b"", b"value")) as server:
        assert client_on(server).get("k") == b"value"


def _hang_up(conn, request):
    return False  # reads the request and closes the connection without an answer


@pytest.mark.parametrize("op", ["get", "put", "delete"])
def test_every_request_sent_is_counted(client_on, monkeypatch, op):
    """aiohttp sends an idempotent request again, uncounted, when the connection closes before an answer:
    the client's own retries are the only ones, counted against the quota, on both clients."""
    async def no_wait(seconds):
        return None

    monkeypatch.setattr(clock, "sleep", lambda seconds: None)
    monkeypatch.setattr(clock, "asleep", no_wait)
    with HostileServer(_hang_up) as server:
        client = client_on(server, max_retries=1)
        with pytest.raises(KVConnectionError):
            getattr(client, op)(*(("k", b"v") if op == "put" else ("k",)))
        assert client.transport.calls.total == len(server.requests) == 2


def _retry_after_twice(conn, request):
    body = json.dumps({"success": False, "errors": [{"code": 10013, "message": "rate"}], "result": None}).encode()
    conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 60\r\n"
                 b"Retry-After: 60\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return False


def test_a_retry_after_sent_twice_means_what_it_says_once(client_on):
    """requests joins a header sent twice ("60, 60"), aiohttp gives the first: both clients read 60 s."""
    with HostileServer(_retry_after_twice) as server:
        client = client_on(server, max_retries=3)
        with pytest.raises(KVRateLimitError) as info:
            client.get("k")
        assert info.value.retry_after == 60 and len(server.requests) == 1  # longer than what is left: not waited


def _odd_length(length):
    def answer(conn, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " + length
                     + b"\r\nConnection: close\r\n\r\ndata")
        return False
    return answer


@pytest.mark.parametrize("length", [b"\xb2", b"9" * 5000], ids=["superscript-two", "5000-digits"])
def test_a_content_length_of_other_digits_is_no_bare_error(client_on, length):
    """"\xb2" reads as "²", a digit to str.isdigit() but not to int(), and int() refuses 5,000 digits: the
    answer is read to its end (requests ignores the header) or refused as a KVError (aiohttp refuses it),
    never a ValueError."""
    with HostileServer(_odd_length(length)) as server:
        client = client_on(server)
        try:
            outcome = client.get("k")
        except KVError as exc:
            outcome = exc
    assert outcome == b"data" or isinstance(outcome, KVConnectionError)


# (d) A listing that goes round in circles is stopped, for every caller.

def _circular(cursors, names=lambda n: [f"k{n}"]):
    """A listing whose n-th page holds ``names(n)`` and the cursor ``cursors(n)``."""
    def answer(conn, request):
        if "/keys" not in request.path:
            reply(conn, body=envelope({"successful_key_count": 0, "unsuccessful_keys": []}))
            return
        n = sum(1 for r in server_requests(conn) if "/keys" in r.path)
        items = [{"name": name, "metadata": {"kind": "cache"}} for name in names(n)]
        reply(conn, body=envelope(items, result_info={"count": len(items), "cursor": cursors(n)}))
    return answer


def server_requests(conn):
    return conn._server.requests


LOOPS = {
    "alternating": _circular(lambda n: "AAA" if n % 2 else "BBB"),
    "repeating": _circular(lambda n: "AAA"),
    "same_page_new_cursor": _circular(lambda n: f"C{n}", names=lambda n: ["k1", "k2"]),
    "empty_pages_forever": _circular(lambda n: f"C{n}", names=lambda n: []),
}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_listing_that_never_ends_raises_instead_of_looping(client_on, loop, monkeypatch):
    monkeypatch.setattr(types, "MAX_EMPTY_PAGES", 5)
    with HostileServer(LOOPS[loop]) as server:
        client = client_on(server)
        with pytest.raises(KVAPIError, match="does not move on"):
            for _ in client.iter_keys():
                pass
    assert len(server.requests) <= 6


def _alias(server):
    return {"default": {"ACCOUNT_ID": ACCOUNT, "NAMESPACE_ID": NS, "API_TOKEN": TOKEN,
                        "BASE_URL": server.base_url, "MAX_RETRIES": 0}}


def _cache_clear():
    caches["default"].clear()


def _cache_keys():
    caches["default"].keys("*")


def _cache_delete_pattern():
    caches["default"].delete_pattern("*")


def _clear_expired():
    SessionStore.clear_expired()


def _inspect_list():
    from django_cfkv import get_kv

    inspect.list_entries(get_kv(), limit=None)


def _sweep():
    call_command("cfkv", "sweep", stdout=io.StringIO(), stderr=io.StringIO())


def _ls():
    call_command("cfkv", "ls", stdout=io.StringIO(), stderr=io.StringIO())


CALLERS = {"cache.clear": _cache_clear, "cache.keys": _cache_keys, "cache.delete_pattern": _cache_delete_pattern,
           "SessionStore.clear_expired": _clear_expired, "inspect.list_entries": _inspect_list,
           "cfkv sweep": _sweep, "cfkv ls": _ls}


@pytest.mark.parametrize("caller", CALLERS)
def test_every_paging_caller_stops_on_alternating_cursors(caller):
    with HostileServer(LOOPS["alternating"]) as server, override_settings(
            CFKV=_alias(server), SESSION_ENGINE="django_cfkv.sessions",
            CACHES={"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default"}}):
        with pytest.raises((KVAPIError, CommandError)) as info:
            CALLERS[caller]()
    assert "does not move on" in str(info.value)
    assert len([r for r in server.requests if "/keys" in r.path]) <= 3


# (e) Cloudflare answers in UTF-8: an answer in any other encoding is malformed, blocking or awaited.

def _listing(body, content_type=None):
    def answer(conn, request):
        reply(conn, body=body, headers={"Content-Type": content_type} if content_type else None)
    return answer


def _listing_body(encoding="utf-8", name="k"):
    return json.dumps(envelope([{"name": name}], result_info={"count": 1, "cursor": ""}),
                      ensure_ascii=False).encode(encoding, "surrogateescape")


ODD_ANSWERS = {  # requests alone would read each: it guesses an encoding, or replaces bytes that are not UTF-8
    "utf-8-sig, no content type": _listing(_listing_body("utf-8-sig")),
    "utf-16, no content type": _listing(_listing_body("utf-16")),
    "utf-32, no content type": _listing(_listing_body("utf-32")),
    "latin-1 in a name, as JSON": _listing(_listing_body(name="caf\udce9"), "application/json"),
}


@pytest.mark.parametrize("answer", ODD_ANSWERS.values(), ids=ODD_ANSWERS)
def test_an_answer_not_in_utf8_is_malformed_for_both_clients(client_on, answer):
    """One upstream's answer means the same to the blocking and the async client: UTF-8 only, as Cloudflare
    sends. (requests' json() would guess UTF-16 or 32, skip a byte-order mark, or read a byte that is not
    UTF-8 as U+FFFD, where aiohttp's answer was read as UTF-8.)"""
    with HostileServer(answer) as server:
        with pytest.raises(KVMalformedResponseError):
            client_on(server).list_keys()


def test_a_utf8_listing_is_read_by_both_clients(client_on):
    """The control for the test above: the same answer in UTF-8, with or without its content type, is a listing."""
    for content_type in (None, "application/json"):
        with HostileServer(_listing(_listing_body(name="café"), content_type)) as server:
            assert [key.name for key in client_on(server).list_keys().keys] == ["café"]
