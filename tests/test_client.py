"""KVClient against `responses` fakes shaped like Cloudflare's documented answers
(shared reference, sections 1-4): URLs, key encoding, envelopes, error mapping, retries."""

import json

import pytest
import requests
import responses
from responses import matchers

from django_cfkv import clock as cfkv_clock
from django_cfkv.client import KVClient
from django_cfkv.exceptions import (
    KVAPIError,
    KVAuthError,
    KVBulkError,
    KVConnectionError,
    KVNotFoundError,
    KVRateLimitError,
    KVTimeout,
    KVValueError,
)

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
NS = "0f2ac74b498b48028cb68387c421e279"
TOKEN = "Zm9vYmFyLXNlY3JldC10b2tlbg"
BASE = f"https://api.cloudflare.com/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{NS}"

KEY_NOT_FOUND = {"success": False, "errors": [{"code": 10009, "message": "get: 'key not found'"}],
                 "messages": [], "result": None}
AUTH_ERROR = {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}],
              "messages": [], "result": None}
NO_RESULT = {"success": True, "errors": [], "messages": [], "result": None}


def ok(result=None, **extra):
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


@pytest.fixture
def client(monkeypatch):
    c = KVClient(ACCOUNT, NS, TOKEN, max_retries=3)
    monkeypatch.setattr(c.transport.policy, "jitter", lambda span: 0.0)
    return c


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(cfkv_clock, "sleep", slept.append)
    return slept


def test_get_reads_raw_bytes_with_token(client, api):
    api.get(f"{BASE}/values/greeting", body=b"\x00raw", content_type="application/octet-stream",
            match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])
    assert client.get("greeting") == b"\x00raw"


def test_get_missing_is_none(client, api):
    api.get(f"{BASE}/values/nope", json=KEY_NOT_FOUND, status=404)
    assert client.get("nope") is None


@pytest.mark.parametrize("key, encoded", [
    ("a/b", "a%2Fb"), ("q?x=1&y", "q%3Fx%3D1%26y"), ("#h", "%23h"), ("50%", "50%25"),
    ("sp ace", "sp%20ace"), ("..x", "..x"), ("é", "%C3%A9"), ("../../keys", "..%2F..%2Fkeys"),
])
def test_every_key_is_percent_encoded_in_one_segment(client, api, key, encoded):
    api.put(f"{BASE}/values/{encoded}", json=NO_RESULT)
    client.put(key, b"v")
    assert api.calls[0].request.url == f"{BASE}/values/{encoded}"


def test_put_raw_with_ttl(client, api):
    api.put(f"{BASE}/values/k", json=NO_RESULT, match=[
        matchers.query_param_matcher({"expiration_ttl": "300"}),
        matchers.header_matcher({"Content-Type": "application/octet-stream"}),
    ])
    client.put("k", b"value", expiration_ttl=300)
    assert api.calls[0].request.body == b"value"


def test_put_with_metadata_is_multipart_with_the_value_as_a_file_part(client, api):
    """A file part: a web-platform form parser (a Worker's formData()) keeps its bytes."""
    import email.parser
    import email.policy

    api.put(f"{BASE}/values/k", json=NO_RESULT)
    value = bytes(range(256))
    client.put("k", value, metadata={"kind": "cache"})
    request = api.calls[0].request
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n" + request.body)
    parts = {p.get_param("name", header="content-disposition"): p for p in form.iter_parts()}
    assert parts["value"].get_filename() == "value"
    assert parts["value"].get_content_type() == "application/octet-stream"
    assert parts["value"].get_payload(decode=True) == value
    assert parts["metadata"].get_filename() is None
    assert parts["metadata"].get_payload(decode=True) == b'{"kind":"cache"}'


def test_get_with_metadata_costs_two_calls(client, api):
    api.get(f"{BASE}/values/k", body=b"v", headers={"expiration": "1900000000"})
    api.get(f"{BASE}/metadata/k", json=ok({"someMetadataKey": "someMetadataValue"}))
    entry = client.get_with_metadata("k")
    assert entry == (b"v", {"someMetadataKey": "someMetadataValue"}, 1900000000)
    assert len(api.calls) == 2


def test_get_with_metadata_missing_costs_one_call(client, api):
    api.get(f"{BASE}/values/k", json=KEY_NOT_FOUND, status=404)
    assert client.get_with_metadata("k") is None


def test_get_many_chunks_by_100(client, api):
    keys = [f"k{i}" for i in range(250)]

    def reply(request):
        asked = json.loads(request.body)
        assert asked["type"] == "text" and len(asked["keys"]) <= 100
        return 200, {}, json.dumps(ok({"values": {k: (None if k == "k7" else k.upper()) for k in asked["keys"]}}))

    api.add_callback(responses.POST, f"{BASE}/bulk/get", callback=reply)
    found = client.get_many(keys)
    assert len(api.calls) == 3
    assert "k7" not in found and found["k8"] == b"K8" and len(found) == 249


def test_put_many_encodes_binary_as_base64(client, api):
    api.put(f"{BASE}/bulk", json=ok({"successful_key_count": 2, "unsuccessful_keys": []}))
    client.put_many([{"key": "t", "value": "text", "expiration_ttl": 60, "metadata": {"m": 1}},
                     {"key": "b", "value": b"\xff\x00"}])
    sent = json.loads(api.calls[0].request.body)
    assert sent == [{"key": "t", "value": "text", "expiration_ttl": 60, "metadata": {"m": 1}},
                    {"key": "b", "value": "/wA=", "base64": True}]


def test_put_many_chunks_by_10000(client, api):
    api.put(f"{BASE}/bulk", json=ok({"successful_key_count": 1, "unsuccessful_keys": []}))
    client.put_many([{"key": f"k{i}", "value": "v"} for i in range(20001)])
    assert [len(json.loads(c.request.body)) for c in api.calls] == [10000, 10000, 1]


def test_put_many_unsuccessful_keys_raise_naming_them(client, api):
    api.put(f"{BASE}/bulk", json=ok({"successful_key_count": 1, "unsuccessful_keys": ["session:b"]}))
    with pytest.raises(KVBulkError) as info:
        client.put_many([{"key": "a", "value": "v"}, {"key": "session:b", "value": "v"}])
    assert info.value.keys == ["session:b"]
    assert "session:b" not in str(info.value)  # on .keys only: error text gets logged


def test_put_many_failed_request_names_all_unwritten_keys(client, api):
    api.put(f"{BASE}/bulk", json={"success": False, "errors": [{"code": 10029, "message": "invalid request"}],
                                  "messages": [], "result": None}, status=400)
    with pytest.raises(KVBulkError) as info:
        client.put_many([{"key": "a", "value": "v"}, {"key": "b", "value": "v"}])
    assert info.value.keys == ["a", "b"]


def test_delete_many_uses_post_bulk_delete(client, api):
    api.post(f"{BASE}/bulk/delete", json=ok({"successful_key_count": 2, "unsuccessful_keys": []}))
    client.delete_many(["a", "b", "a"])
    assert json.loads(api.calls[0].request.body) == ["a", "b"]


def test_list_keys_pages_with_cursor(client, api):
    api.get(f"{BASE}/keys", match=[matchers.query_param_matcher({"limit": "1000", "prefix": "p"})],
            json=ok([{"name": "p1", "expiration": 1577836800, "metadata": {"someMetadataKey": "x"}}],
                    result_info={"count": 1, "cursor": "6Ck1la0VxJ0djhidm1MdX2FyD"}))
    api.get(f"{BASE}/keys", match=[matchers.query_param_matcher(
        {"limit": "1000", "prefix": "p", "cursor": "6Ck1la0VxJ0djhidm1MdX2FyD"})],
        json=ok([{"name": "p2"}], result_info={"count": 1, "cursor": ""}))
    keys = list(client.iter_keys(prefix="p"))
    assert [(k.name, k.expiration, k.metadata) for k in keys] == [
        ("p1", 1577836800, {"someMetadataKey": "x"}), ("p2", None, None)]


def test_list_last_page_without_cursor_field(client, api):
    api.get(f"{BASE}/keys", json=ok([{"name": "a"}], result_info={"count": 1}))
    assert client.list_keys().cursor is None


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_fail_at_once_naming_the_permission(client, api, sleeps, status):
    api.get(f"{BASE}/values/k", json=AUTH_ERROR, status=status)
    with pytest.raises(KVAuthError, match="Workers KV Storage Read/Write") as info:
        client.get("k")
    assert len(api.calls) == 1 and not sleeps
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


def test_missing_namespace_is_not_a_key_miss(client, api):
    api.get(f"{BASE}/values/k", status=404, json={"success": False, "errors": [
        {"code": 10013, "message": "namespace not found"}], "messages": [], "result": None})
    with pytest.raises(KVNotFoundError, match="NAMESPACE_ID"):
        client.get("k")


def test_success_false_on_200_is_an_error(client, api):
    api.get(f"{BASE}/metadata/k", json={"success": False, "errors": [{"code": 10001, "message": "x"}],
                                        "messages": [], "result": None})
    with pytest.raises(KVAPIError, match="10001"):
        client.get_metadata("k")


def test_malformed_json_is_an_error(client, api):
    api.get(f"{BASE}/metadata/k", body="<html>oops</html>", content_type="text/html")
    with pytest.raises(KVAPIError, match="not JSON"):
        client.get_metadata("k")


def test_retries_503_with_capped_backoff(client, api, sleeps):
    api.get(f"{BASE}/values/k", status=503, json={"success": False, "errors": [], "messages": [], "result": None})
    api.get(f"{BASE}/values/k", status=503, json={"success": False, "errors": [], "messages": [], "result": None})
    api.get(f"{BASE}/values/k", body=b"v")
    assert client.get("k") == b"v"
    assert sleeps == [0.125, 0.25]  # half the backoff; jitter patched to 0


def test_retry_after_is_honoured(client, api, sleeps):
    api.get(f"{BASE}/values/k", status=429, headers={"Retry-After": "2"}, json={
        "success": False, "errors": [{"code": 10022, "message": "too many requests"}], "messages": [], "result": None})
    api.get(f"{BASE}/values/k", body=b"v")
    assert client.get("k") == b"v"
    assert sleeps == [2.0]


def test_long_retry_after_is_not_waited_for(client, api, sleeps):
    api.get(f"{BASE}/values/k", status=429, headers={"Retry-After": "300"}, json={
        "success": False, "errors": [{"code": 10022, "message": "too many requests"}], "messages": [], "result": None})
    with pytest.raises(KVRateLimitError) as info:
        client.get("k")
    assert info.value.retry_after == 300 and not sleeps and "300" in str(info.value)


def test_gives_up_after_max_retries(client, api, sleeps):
    api.get(f"{BASE}/values/k", status=502, body="bad gateway")
    with pytest.raises(KVAPIError, match="server error"):
        client.get("k")
    assert len(api.calls) == 4 and len(sleeps) == 3


def test_connection_errors_retry_then_raise(client, api, sleeps):
    api.get(f"{BASE}/values/k", body=requests.ConnectionError("reset by peer"))
    with pytest.raises(KVConnectionError):
        client.get("k")
    assert len(api.calls) == 4


def test_timeout_maps_to_kvtimeout_without_the_key(client, api, sleeps):
    key = "session:abcdef0123456789abcdef0123456789"  # a key can be a credential
    api.get(f"{BASE}/values/session%3Aabcdef0123456789abcdef0123456789",
            body=requests.ReadTimeout(f"slow: {BASE}/values/session%3Aabcdef0123456789abcdef0123456789"))
    with pytest.raises(KVTimeout) as info:
        client.get(key)
    assert "ReadTimeout" in str(info.value) and "api.cloudflare.com" in str(info.value)
    assert "abcdef0123" not in str(info.value) and info.value.__cause__ is None


def test_a_quota_429_blocks_later_calls_without_io(client, api, sleeps):
    api.get(f"{BASE}/values/k", status=429, headers={"Retry-After": "300", "Ratelimit": '"default";r=0;t=300'}, json={
        "success": False, "errors": [{"code": 10022, "message": "too many requests"}], "messages": [], "result": None})
    with pytest.raises(KVRateLimitError):
        client.get("k")
    with pytest.raises(KVRateLimitError, match="no call was sent") as info:
        client.put("other", b"v")
    assert len(api.calls) == 1 and 290 < info.value.retry_after <= 300


def test_errors_keep_no_response_so_pickling_them_cannot_leak_the_token(client, api):
    import pickle

    api.get(f"{BASE}/values/k", json=AUTH_ERROR, status=403)
    with pytest.raises(KVAuthError) as info:
        client.get("k")
    assert TOKEN.encode() not in pickle.dumps(info.value)


def test_namespace_create_is_not_retried(client, api, sleeps):
    api.post(f"https://api.cloudflare.com/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces", status=503,
             json={"success": False, "errors": [], "messages": [], "result": None})
    with pytest.raises(KVAPIError):
        client.create_namespace("x")
    assert len(api.calls) == 1


def test_every_call_has_a_timeout(client, api, monkeypatch):
    seen = []
    original = requests.Session.request

    def spy(self, method, url, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    api.get(f"{BASE}/values/k", body=b"v")
    client.get("k")
    [(connect, read)] = seen
    assert connect == 5.0 and 29 < read <= 30.0  # the read part never outlasts the 30 s deadline


def test_low_budget_is_logged(client, api, caplog):
    api.get(f"{BASE}/values/k", body=b"v", headers={"Ratelimit": '"default";r=12;t=30'})
    client.get("k")
    assert client.transport.budget[:2] == (12, 30)
    assert "12 calls left" in caplog.text


def test_validation_happens_before_any_io(client, api):
    for call in (lambda: client.get(".."), lambda: client.put("k", b"v", expiration_ttl=30),
                 lambda: client.put("k", b"v", metadata={"x": "y" * 2000}), lambda: client.list_keys(limit=5),
                 lambda: client.put("x" * 513, b"v"), lambda: client.get_many(["ok", ""])):
        with pytest.raises(KVValueError):
            call()
    assert len(api.calls) == 0


def test_repr_and_errors_never_show_the_token(client, api):
    api.get(f"{BASE}/values/k", body=requests.ConnectionError("boom"))
    text = repr(client) + repr(client.transport)
    try:
        client.get("k")
    except KVConnectionError as exc:
        text += str(exc) + repr(exc)
    assert TOKEN not in text


def test_calls_are_counted_per_endpoint(client, api, sleeps):
    from django_cfkv.transport import calls

    before = calls.snapshot()
    api.get(f"{BASE}/values/k", status=503, json={"success": False, "errors": [], "messages": [], "result": None})
    api.get(f"{BASE}/values/k", body=b"v")
    api.delete(f"{BASE}/values/k", json=NO_RESULT)
    client.get("k")
    client.delete("k")
    after = calls.snapshot()
    assert after.get("get", 0) - before.get("get", 0) == 2  # each attempt costs quota
    assert after.get("delete", 0) - before.get("delete", 0) == 1
    assert client.transport.calls.snapshot() == {"get": 2, "delete": 1}


def test_deadline_caps_total_waiting(api, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cfkv_clock, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cfkv_clock, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    client = KVClient(ACCOUNT, NS, TOKEN, max_retries=3, deadline=0.5)
    monkeypatch.setattr(client.transport.policy, "jitter", lambda span: 0.0)
    api.get(f"{BASE}/values/k", status=503, json={"success": False, "errors": [], "messages": [], "result": None})
    with pytest.raises(KVAPIError) as info:
        client.get("k")
    # Backoffs of 0.125 and 0.25 s fit in 0.5 s; the next (0.5 s) would not, so the 503 is raised.
    assert len(api.calls) == 3 and info.value.status == 503 and clock[0] == 0.375


@pytest.mark.parametrize("value, ok", [(30, True), (0.5, True), (0, False), (-1, False), ("30", False),
                                       (None, False), (float("nan"), False)])
def test_deadline_setting_is_checked(settings, value, ok):
    from django_cfkv.checks import check_cfkv_setting
    from django_cfkv.exceptions import CFKVConfigurationError

    settings.CFKV = {"default": {"ACCOUNT_ID": ACCOUNT, "NAMESPACE_ID": NS, "API_TOKEN": TOKEN, "DEADLINE": value}}
    assert ("django_cfkv.E009" not in [e.id for e in check_cfkv_setting()]) == ok
    if not ok:
        with pytest.raises(CFKVConfigurationError, match="DEADLINE"):
            KVClient(ACCOUNT, NS, TOKEN, deadline=value)


def test_override_cfkv_keeps_the_aliases_deadline(settings, cfkv_emulator):
    from django_cfkv.testing import override_cfkv

    settings.CFKV = {"default": {"ACCOUNT_ID": ACCOUNT, "NAMESPACE_ID": NS, "API_TOKEN": TOKEN, "DEADLINE": 7}}
    with override_cfkv(emulator=cfkv_emulator) as kv:
        assert kv.transport.deadline == 7.0
