"""The fault matrix on the KV layer every feature stands on (KVClient + transport).

Wire answers follow Cloudflare's documented format (shared reference, sections
1-4). For every operation and every fault the outcome is asserted: a bounded
number of attempts, then one typed error; never a silent success. Transient
faults that clear are retried into success, and an acknowledged write is
always readable afterwards.
"""

import json
import re

import pytest
import requests

from django_cfkv.client import KVClient
from django_cfkv.exceptions import (
    KVAPIError,
    KVAuthError,
    KVBulkError,
    KVConnectionError,
    KVError,
    KVNotFoundError,
    KVRateLimitError,
    KVTimeout,
)
from tests.support.faults import ACCOUNT, BASE, MAX_RETRIES, NS, TOKEN, envelope, failure

ANY = re.compile(re.escape(BASE) + r"(/.*)?(\?.*)?$")
ATTEMPTS = MAX_RETRIES + 1

# name: (call, is a write, is bulk)
OPS = {
    "get": (lambda c: c.get("k"), False, False),
    "get_metadata": (lambda c: c.get_metadata("k"), False, False),
    "get_many": (lambda c: c.get_many(["a", "b"]), False, False),
    "list_keys": (lambda c: c.list_keys(prefix="p"), False, False),
    "put": (lambda c: c.put("k", b"v", expiration_ttl=60), True, False),
    "put_metadata": (lambda c: c.put("k", b"v", metadata={"kind": "cache"}), True, False),
    "delete": (lambda c: c.delete("k"), True, False),
    "put_many": (lambda c: c.put_many([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]), True, True),
    "delete_many": (lambda c: c.delete_many(["a", "b"]), True, True),
}

# name: (status, headers, body, expected error, retried?)
HTTP_FAULTS = {
    "429_retry_after": (429, {"Retry-After": "1"}, failure(10022, "too many requests"), KVRateLimitError, True),
    "429_bare": (429, {}, failure(10022, "too many requests"), KVRateLimitError, True),
    "500": (500, {}, failure(10001, "service temporarily unavailable"), KVAPIError, True),
    "502": (502, {"Content-Type": "text/html"}, "<html>bad gateway</html>", KVAPIError, True),
    "503": (503, {}, failure(10001, "service temporarily unavailable"), KVAPIError, True),
    "504": (504, {"Content-Type": "text/html"}, "<html>gateway timeout</html>", KVAPIError, True),
    "401": (401, {}, failure(10000, "Authentication error"), KVAuthError, False),
    "403": (403, {}, failure(10000, "Authentication error"), KVAuthError, False),
    "missing_namespace": (404, {}, failure(10013, "namespace not found"), KVNotFoundError, False),
    "bad_route": (404, {}, failure(7003, "No route for the URI"), KVNotFoundError, False),
}


# What each error's text tells the reader to fix or expect.
ADVICE = {401: "Workers KV Storage Read/Write", 403: "Workers KV Storage Read/Write", 404: "NAMESPACE_ID",
          500: "server error", 502: "server error", 503: "server error", 504: "server error"}


def _body(body):
    return body if isinstance(body, str) else json.dumps(body)


@pytest.mark.parametrize("fault", HTTP_FAULTS)
@pytest.mark.parametrize("op", OPS)
def test_http_fault_gives_bounded_retries_then_a_typed_error(loose_api, fake_client, slept, op, fault):
    call, _, bulk = OPS[op]
    status, headers, body, error, retried = HTTP_FAULTS[fault]
    for method in ("GET", "PUT", "POST", "DELETE"):
        loose_api.add(method, ANY, status=status, headers=headers, body=_body(body))
    with pytest.raises(KVError) as info:
        call(fake_client)
    # Bulk writes report the keys left undone (all of them here) as a KVBulkError.
    assert isinstance(info.value, KVBulkError if bulk else error)
    if bulk:
        assert sorted(info.value.keys) == ["a", "b"]
    assert info.value.status == status
    assert len(loose_api.calls) == (ATTEMPTS if retried else 1)
    assert len(slept) == (MAX_RETRIES if retried else 0)
    if fault == "429_retry_after":
        assert slept == [1.0] * MAX_RETRIES  # Cloudflare's Retry-After is honoured exactly
        if not bulk:
            assert info.value.retry_after == 1.0
    # The text says what to fix.
    assert ADVICE.get(status, "") in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


@pytest.mark.parametrize("body", ["<html>ok</html>", '{"success": true', "[1, 2]", "null"])
@pytest.mark.parametrize("op", [o for o in OPS if o != "get"])
def test_malformed_json_on_200_is_an_error(loose_api, fake_client, op, body):
    """Every call but a value read is enveloped; a 200 that is not an envelope is not success."""
    call, _, bulk = OPS[op]
    for method in ("GET", "PUT", "POST", "DELETE"):
        loose_api.add(method, ANY, status=200, body=body, content_type="application/json")
    with pytest.raises(KVBulkError if bulk else KVAPIError, match="not JSON" if body.startswith(("<", "{")) else
                       "malformed"):
        call(fake_client)


@pytest.mark.parametrize("op", [o for o in OPS if o != "get"])
def test_success_false_on_200_is_an_error(loose_api, fake_client, op):
    call, _, bulk = OPS[op]
    for method in ("GET", "PUT", "POST", "DELETE"):
        loose_api.add(method, ANY, status=200, json=failure(10001, "service temporarily unavailable"))
    with pytest.raises(KVBulkError if bulk else KVAPIError, match="10001"):
        call(fake_client)


def test_value_read_is_raw_bytes_even_when_they_look_like_a_failure(api, fake_client):
    """A value read is not enveloped: a stored value that is JSON text comes back as is."""
    stored = json.dumps(failure(10001, "x")).encode()
    api.get(f"{BASE}/values/k", body=stored, content_type="application/octet-stream")
    assert fake_client.get("k") == stored


@pytest.mark.parametrize("fault", ["503", "502", "429_retry_after", "connection"])
@pytest.mark.parametrize("op", OPS)
def test_transient_fault_is_retried_into_success(loose_api, fake_client, slept, op, fault):
    call, _, _ = OPS[op]
    answers = {
        "/values/k": {"GET": (200, {}, "v"), "PUT": (200, {}, envelope()), "DELETE": (200, {}, envelope())},
        "/metadata/k": {"GET": (200, {}, envelope({"kind": "cache"}))},
        "/bulk/get": {"POST": (200, {}, envelope({"values": {"a": "1", "b": None}}))},
        "/keys": {"GET": (200, {}, envelope([{"name": "p1"}], result_info={"count": 1, "cursor": ""}))},
        "/bulk": {"PUT": (200, {}, envelope({"successful_key_count": 2, "unsuccessful_keys": []}))},
        "/bulk/delete": {"POST": (200, {}, envelope({"successful_key_count": 2, "unsuccessful_keys": []}))},
    }
    failures = []

    def reply(request):
        if len(failures) < MAX_RETRIES:
            failures.append(request.method)
            if fault == "connection":
                raise requests.ConnectionError("connection reset by peer")
            status, headers, body, _, _ = HTTP_FAULTS[fault]
            return status, headers, _body(body)
        path = request.path_url.split("?")[0][len(BASE) - len("https://api.cloudflare.com"):]
        status, headers, body = answers[path][request.method]
        return status, headers, _body(body)

    for method in ("GET", "PUT", "POST", "DELETE"):
        loose_api.add_callback(method, ANY, callback=reply)
    call(fake_client)
    assert len(loose_api.calls) == ATTEMPTS and len(slept) == MAX_RETRIES


def test_bulk_partial_failure_names_exactly_the_keys_not_written(api, fake_client):
    items = [{"key": k, "value": "v"} for k in "abc"]
    api.put(f"{BASE}/bulk", json=envelope({"successful_key_count": 2, "unsuccessful_keys": ["b"]}))
    api.put(f"{BASE}/bulk", json=envelope({"successful_key_count": 1, "unsuccessful_keys": ["a", "c"]}))
    with pytest.raises(KVBulkError) as info:
        fake_client.put_many(items)
    assert info.value.keys == ["b"] and info.value.partial
    # The next run reports its own answer's keys: nothing is carried over from the run before.
    with pytest.raises(KVBulkError) as info:
        fake_client.put_many(items)
    assert info.value.keys == ["a", "c"] and len(api.calls) == 2


def test_create_namespace_is_never_retried(api, fake_client, slept):
    """Creating a namespace is not idempotent: a 503 must not create two."""
    url = f"https://api.cloudflare.com/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces"
    api.post(url, status=503, json=failure(10001, "service temporarily unavailable"))
    with pytest.raises(KVAPIError, match="server error"):
        fake_client.create_namespace("t")
    assert len(api.calls) == 1 and not slept


# Faults on the socket: real loopback sockets, no mocks.

SOCKET_OPS = ["get", "put", "put_many", "delete_many", "list_keys"]
BULK_OPS = ("put_many", "delete_many")


def _failure(info, op):
    """The transport's error: bulk calls wrap it in a KVBulkError naming every key not done."""
    if op in BULK_OPS:
        assert isinstance(info.value, KVBulkError) and info.value.keys and not info.value.partial
        return info.value.__cause__
    return info.value


@pytest.mark.parametrize("mode, error", [
    ("silent", KVTimeout),     # accepts, never answers: a read timeout
    ("backlog", KVTimeout),    # never accepts: a connect timeout
    ("reset", KVConnectionError),
])
@pytest.mark.parametrize("op", SOCKET_OPS)
def test_socket_fault_is_retried_then_typed(listener, slept, as_mode, op, mode, error):
    server = listener(mode)
    client = as_mode(KVClient(ACCOUNT, NS, TOKEN, base_url=server.base_url, timeout=0.2, max_retries=MAX_RETRIES))
    try:
        with pytest.raises(KVError) as info:
            OPS[op][0](client)
    finally:
        client.close()
    failure = _failure(info, op)
    assert isinstance(failure, error)
    assert client.transport.calls.total == ATTEMPTS
    if mode != "reset":
        assert isinstance(failure, KVTimeout)
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


@pytest.mark.parametrize("op", SOCKET_OPS)
def test_refused_connection_is_a_connection_error_not_a_timeout(closed_port, slept, as_mode, op):
    client = as_mode(KVClient(ACCOUNT, NS, TOKEN, base_url=f"http://127.0.0.1:{closed_port}/client/v4",
                              timeout=0.5, max_retries=MAX_RETRIES))
    with pytest.raises(KVError) as info:
        OPS[op][0](client)
    failure = _failure(info, op)
    assert isinstance(failure, KVConnectionError) and not isinstance(failure, KVTimeout)
    assert client.transport.calls.total == ATTEMPTS
    client.close()


# The same matrix against the emulator's fault injection (a real HTTP server), blocking and awaited.

def _emulator_client(emulator, **kwargs):
    kwargs.setdefault("max_retries", MAX_RETRIES)
    kwargs.setdefault("timeout", 2.0)
    return emulator.client(**kwargs)


@pytest.mark.parametrize("faults, error", [
    ({"rate_429": 1.0, "retry_after": 1}, KVRateLimitError),
    ({"rate_429": 1.0, "retry_after": -1}, KVRateLimitError),
    ({"rate_503": 1.0}, KVAPIError),
])
@pytest.mark.parametrize("op", OPS)
def test_emulator_faults_give_bounded_retries(emulator, slept, as_mode, op, faults, error):
    client = as_mode(_emulator_client(emulator))
    emulator.set_faults(**faults)
    call, _, bulk = OPS[op]
    with pytest.raises(KVBulkError if bulk else error):
        call(client)
    assert client.transport.calls.total == ATTEMPTS
    client.close()


def test_emulator_wrong_token_is_an_auth_error_at_once(emulator, slept, as_mode):
    client = as_mode(KVClient(emulator.account_id, emulator.new_namespace_id(), "not-the-token",
                              base_url=emulator.base_url, max_retries=MAX_RETRIES))
    with pytest.raises(KVAuthError):
        client.put("k", b"v")
    assert client.transport.calls.total == 1 and not slept
    client.close()


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_emulator_bulk_partial_failure_loses_nothing_acknowledged(emulator, as_mode, share):
    client = as_mode(_emulator_client(emulator))
    items = [{"key": f"k{i}", "value": f"value-{i}"} for i in range(60)]
    emulator.set_faults(bulk_unsuccessful=share)
    with pytest.raises(KVBulkError) as info:
        client.put_many(items)
    emulator.clear_faults()
    failed = set(info.value.keys)
    assert failed and (share < 1.0 or len(failed) == 60)
    got = client.get_many([i["key"] for i in items])
    # Written exactly the keys not named: nothing acknowledged is missing, nothing named is there.
    assert set(got) == {i["key"] for i in items} - failed
    assert all(got[k] == f"value-{k[1:]}".encode() for k in got)
    client.close()


def test_emulator_bulk_delete_partial_failure_names_keys_left(emulator, as_mode):
    client = as_mode(_emulator_client(emulator))
    client.put_many([{"key": f"k{i}", "value": "v"} for i in range(40)])
    emulator.set_faults(bulk_unsuccessful=0.5)
    with pytest.raises(KVBulkError) as info:
        client.delete_many([f"k{i}" for i in range(40)])
    emulator.clear_faults()
    assert {k.name for k in client.iter_keys()} == set(info.value.keys)
    client.close()


def test_emulator_missing_namespace_is_not_a_key_miss(emulator, as_mode):
    client = as_mode(_emulator_client(emulator, namespace_id="x" * 40))  # longer than an id can be
    with pytest.raises(KVNotFoundError, match="NAMESPACE_ID"):
        client.get("k")
    client.close()


def test_acknowledged_writes_survive_random_faults(emulator, slept, as_mode):
    """Under 30% 503s and 10% 429s: every put either raised or is readable afterwards."""
    client = as_mode(_emulator_client(emulator, max_retries=1))
    emulator.set_faults(rate_503=0.3, rate_429=0.1, retry_after=0)
    acked, raised = {}, 0
    for i in range(150):
        value = f"value-{i}-{'x' * (i % 7)}".encode()
        try:
            client.put(f"key:{i}", value, metadata={"kind": "cache", "i": i})
        except KVError:
            raised += 1
        else:
            acked[f"key:{i}"] = value
    emulator.clear_faults()
    assert raised and acked  # both outcomes happened, so the invariant was exercised
    for key, value in acked.items():
        entry = client.get_with_metadata(key)
        assert entry is not None and entry.value == value and entry.metadata["i"] == int(key[4:])
    client.close()
