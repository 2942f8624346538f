"""No log record, at any level and from any logger the client causes (urllib3's and
aiohttp's included), holds a session's KV key, its id, or a cursor or prefix made of them,
from the blocking client or the async one. The records themselves stay: request lines still
show method, path shape and status."""

import base64
import logging
import threading
from urllib.parse import quote

import pytest

from tests.support.twins import Awaited

SESSION_ID = "k3v9q2m8x7c4b1n6z5l0p8r2t4y6u1w3"  # shaped like Django's session keys
KEY = f"session:{SESSION_ID}"


class _Everything(logging.Handler):
    """Every record the test's own thread makes, or django-cfkv's worker threads (where awaited calls run
    without the async extra); not the in-process emulator's, which logs from its own threads."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self._thread = threading.get_ident()

    def emit(self, record):
        if record.thread == self._thread or (record.threadName or "").startswith("django-cfkv"):
            self.records.append(record)


@pytest.fixture
def every_record():
    root = logging.getLogger()
    handler, level = _Everything(), root.level
    quiet = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in quiet:  # nothing may hide below DEBUG
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield handler.records
    root.removeHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def _secrets():
    forms = {KEY, SESSION_ID, quote(KEY, safe=""), quote(KEY)}
    for text in (KEY, KEY[:20]):
        forms |= {base64.urlsafe_b64encode(text.encode()).decode().rstrip("="),
                  base64.b64encode(text.encode()).decode().rstrip("=")}
    return forms | {SESSION_ID[:12]}


def _text(record):
    text = record.getMessage()
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return text


def _calls(client):
    client.put(KEY, b"v")
    client.put(KEY, b"v", metadata={"kind": "session"}, expiration_ttl=300)
    client.get(KEY)
    client.get_with_metadata(KEY)
    client.get_metadata(KEY)
    client.get_many([KEY, KEY + "0"])
    client.put_many([{"key": KEY + str(i), "value": "v"} for i in range(12)])
    page = client.list_keys(prefix=KEY, limit=10)  # a cursor made from a session key
    client.list_keys(prefix=KEY, limit=10, cursor=page.cursor)
    list(client.iter_keys(prefix="session:"))
    client.delete(KEY)
    client.delete_many([KEY + str(i) for i in range(12)])


def test_no_record_holds_a_session_key(emulator, every_record, as_mode):
    made = emulator.client()
    client = as_mode(made)
    _calls(client)
    made.close()
    leaks = [(r.name, _text(r)) for r in every_record if any(s in _text(r) for s in _secrets())]
    assert not leaks
    # The useful records are still there, with the key replaced.
    ours = [_text(r) for r in every_record if r.name == "django_cfkv"]
    assert any(line.startswith("KV PUT put -> 200 in") for line in ours), ours[:3]
    if not isinstance(client, Awaited):  # the blocking client: urllib3 logs its request lines (aiohttp none)
        lines = [_text(r) for r in every_record if r.name == "urllib3.connectionpool" and "HTTP/1.1" in _text(r)]
        assert any("/values/<key> HTTP/1.1\" 200" in line for line in lines), lines[:3]
        assert any("cursor=<redacted>" in line for line in lines)


def test_no_record_holds_a_session_key_when_calls_fail(emulator, every_record, slept, as_mode):
    """Retries, 429s and 503s log more (at INFO and WARNING); none of it names the key."""
    made = emulator.client(max_retries=1)
    client = as_mode(made)
    emulator.set_faults(rate_503=0.5, rate_429=0.3, retry_after=0)
    try:
        for _ in range(5):
            try:
                _calls(client)
            except Exception:  # noqa: BLE001 - failures are the point; their records are checked
                pass
    finally:
        emulator.clear_faults()
        made.close()
    assert every_record
    assert not [(r.name, _text(r)) for r in every_record if any(s in _text(r) for s in _secrets())]


def test_a_key_a_server_echoes_into_an_error_is_not_in_the_exception(emulator, as_mode):
    """The emulator (like the gateway) names the key of a binary value a bulk read refuses;
    the error's text and its .errors say <key> instead, so logging the error logs no key."""
    from django_cfkv.exceptions import KVAPIError

    made = emulator.client()
    client = as_mode(made)
    client.put(KEY, b"\xff\xfe binary")
    with pytest.raises(KVAPIError) as info:
        client.get_many([KEY])
    made.close()
    text = str(info.value) + repr(info.value) + repr(info.value.errors)
    assert "<key>" in text and not [s for s in _secrets() if s in text]


# A server's words: escape sequences (clear the screen, set the clipboard), a carriage return and
# a newline that would forge a log line, and a bidi override.
FORGED = "\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\r\nINFO django_cfkv: KV GET get -> 200\u202e"


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_servers_words_are_shown_on_one_line_with_nothing_a_terminal_acts_on(scripted, scripted_client, status):
    """Error text ends up in logs and on terminals (``manage.py cfkv``): what a server said is kept in it,
    escaped, so it can neither forge a log line nor drive the terminal that shows it."""
    from django_cfkv.exceptions import KVAPIError

    scripted.every(status, json={"success": False, "errors": [{"code": 10001, "message": FORGED}]},
                   headers={"cf-ray": "8f1a2b3c\x1b]0;title\x07-LHR" + "9" * 500})
    with pytest.raises(KVAPIError) as info:
        scripted_client.get("k")
    text = str(info.value)
    assert r"\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\r\nINFO django_cfkv: KV GET get -> 200\u202e" in text
    assert all(char.isprintable() for char in text + repr(info.value)), text
    assert r"[cf-ray 8f1a2b3c\x1b]0;title\x07-LHR99" in text and len(info.value.ray_id) < 100
