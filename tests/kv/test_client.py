"""KVClient against `responses` fakes shaped like Cloudflare's documented answers
(shared reference, sections 1-4): URLs, key encoding, bodies, envelopes, listing and bulk calls.

Faults (error statuses, malformed answers, dead sockets) are in test_faults.py;
retries, waits and the deadline in test_transport.py.
"""

import json
import pickle

import pytest
import responses
from responses import matchers

from django_cfkv.client import KVClient
from django_cfkv.exceptions import KVAuthError, KVBulkError, KVValueError
from tests.support.faults import ACCOUNT, BASE, NS, TOKEN, envelope, failure

KEY_NOT_FOUND = failure(10009, "get: 'key not found'")


def test_get_reads_raw_bytes_with_token(fake_client, api):
    api.get(f"{BASE}/values/greeting", body=b"\x00raw", content_type="application/octet-stream",
            match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])
    assert fake_client.get("greeting") == b"\x00raw"


def test_get_missing_is_none(fake_client, api):
    api.get(f"{BASE}/values/nope", json=KEY_NOT_FOUND, status=404)
    assert fake_client.get("nope") is None


@pytest.mark.parametrize("key, encoded", [
    ("a/b", "a%2Fb"), ("q?x=1&y", "q%3Fx%3D1%26y"), ("#h", "%23h"), ("50%", "50%25"),
    ("sp ace", "sp%20ace"), ("..x", "..x"), ("é", "%C3%A9"), ("../../keys", "..%2F..%2Fkeys"),
])
def test_every_key_is_percent_encoded_in_one_segment(fake_client, api, key, encoded):
    api.put(f"{BASE}/values/{encoded}", json=envelope())
    fake_client.put(key, b"v")
    assert api.calls[0].request.url == f"{BASE}/values/{encoded}"


def test_account_and_namespace_ids_are_one_path_segment_each(api):
    """An id from settings cannot reach another path either, and a trailing slash on BASE_URL is dropped."""
    api.get("https://kv.example.com/client/v4/accounts/a%2F..%2Fb/storage/kv/namespaces/n%3Fx%23y/values/k",
            body=b"v")
    client = KVClient("a/../b", "n?x#y", TOKEN, base_url="https://kv.example.com/client/v4/", max_retries=0)
    assert client.get("k") == b"v"


def test_put_raw_with_ttl(fake_client, api):
    api.put(f"{BASE}/values/k", json=envelope(), match=[
        matchers.query_param_matcher({"expiration_ttl": "300"}),
        matchers.header_matcher({"Content-Type": "application/octet-stream"}),
    ])
    fake_client.put("k", b"value", expiration_ttl=300)
    assert api.calls[0].request.body == b"value"


def test_put_with_metadata_is_multipart_with_the_value_as_a_file_part(fake_client, api):
    """A file part: a web-platform form parser (a Worker's formData()) keeps its bytes."""
    import email.parser
    import email.policy

    api.put(f"{BASE}/values/k", json=envelope())
    value = bytes(range(256))
    fake_client.put("k", value, metadata={"kind": "cache"})
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


def test_get_with_metadata_costs_two_calls(fake_client, api):
    api.get(f"{BASE}/values/k", body=b"v", headers={"expiration": "1900000000"})
    api.get(f"{BASE}/metadata/k", json=envelope({"someMetadataKey": "someMetadataValue"}))
    entry = fake_client.get_with_metadata("k")
    assert entry == (b"v", {"someMetadataKey": "someMetadataValue"}, 1900000000)
    assert len(api.calls) == 2


def test_get_with_metadata_missing_costs_one_call(fake_client, api):
    api.get(f"{BASE}/values/k", json=KEY_NOT_FOUND, status=404)
    assert fake_client.get_with_metadata("k") is None


def test_get_many_chunks_by_100(fake_client, api):
    keys = [f"k{i}" for i in range(250)]

    def reply(request):
        asked = json.loads(request.body)
        assert asked["type"] == "text" and len(asked["keys"]) <= 100
        return 200, {}, json.dumps(envelope({"values": {k: (None if k == "k7" else k.upper())
                                                        for k in asked["keys"]}}))

    api.add_callback(responses.POST, f"{BASE}/bulk/get", callback=reply)
    found = fake_client.get_many(keys)
    assert len(api.calls) == 3
    assert "k7" not in found and found["k8"] == b"K8" and len(found) == 249


def test_put_many_encodes_binary_as_base64(fake_client, api):
    api.put(f"{BASE}/bulk", json=envelope({"successful_key_count": 2, "unsuccessful_keys": []}))
    fake_client.put_many([{"key": "t", "value": "text", "expiration_ttl": 60, "metadata": {"m": 1}},
                     {"key": "b", "value": b"\xff\x00"}])
    sent = json.loads(api.calls[0].request.body)
    assert sent == [{"key": "t", "value": "text", "expiration_ttl": 60, "metadata": {"m": 1}},
                    {"key": "b", "value": "/wA=", "base64": True}]


def test_put_many_chunks_by_10000(fake_client, api):
    api.put(f"{BASE}/bulk", json=envelope({"successful_key_count": 1, "unsuccessful_keys": []}))
    fake_client.put_many([{"key": f"k{i}", "value": "v"} for i in range(20001)])
    assert [len(json.loads(c.request.body)) for c in api.calls] == [10000, 10000, 1]


def test_put_many_unsuccessful_keys_raise_naming_them(fake_client, api):
    api.put(f"{BASE}/bulk", json=envelope({"successful_key_count": 1, "unsuccessful_keys": ["session:b"]}))
    with pytest.raises(KVBulkError) as info:
        fake_client.put_many([{"key": "a", "value": "v"}, {"key": "session:b", "value": "v"}])
    assert info.value.keys == ["session:b"] and info.value.partial
    assert "session:b" not in str(info.value)  # on .keys only: error text gets logged


def test_put_many_failed_request_names_all_unwritten_keys(fake_client, api):
    api.put(f"{BASE}/bulk", json=failure(10029, "invalid request"), status=400)
    with pytest.raises(KVBulkError) as info:
        fake_client.put_many([{"key": "a", "value": "v"}, {"key": "b", "value": "v"}])
    assert info.value.keys == ["a", "b"]


@pytest.mark.parametrize("op", ["put_many", "delete_many"])
def test_a_batch_that_fails_partway_names_its_keys_and_every_later_batchs(fake_client, api, op):
    """Three batches: the first is written but for one key, the second is refused, the third never
    sent. Every key not written is named, in order, so a caller retrying ``exc.keys`` loses nothing."""
    keys = [f"k{i:05}" for i in range(20_001)]
    method, url = ("PUT", f"{BASE}/bulk") if op == "put_many" else ("POST", f"{BASE}/bulk/delete")
    api.add(method, url, json=envelope({"successful_key_count": 9_999, "unsuccessful_keys": ["k00003"]}))
    api.add(method, url, json=failure(10001, "service temporarily unavailable"), status=400)
    with pytest.raises(KVBulkError) as info:
        if op == "put_many":
            fake_client.put_many([{"key": k, "value": "v"} for k in keys])
        else:
            fake_client.delete_many(keys)
    assert len(api.calls) == 2  # the third batch was not sent
    assert info.value.keys == ["k00003"] + keys[10_000:]
    assert not info.value.partial and info.value.status == 400


def test_delete_many_uses_post_bulk_delete(fake_client, api):
    api.post(f"{BASE}/bulk/delete", json=envelope({"successful_key_count": 2, "unsuccessful_keys": []}))
    fake_client.delete_many(["a", "b", "a"])
    assert json.loads(api.calls[0].request.body) == ["a", "b"]


def test_list_keys_pages_with_cursor(fake_client, api):
    api.get(f"{BASE}/keys", match=[matchers.query_param_matcher({"limit": "1000", "prefix": "p"})],
            json=envelope([{"name": "p1", "expiration": 1577836800, "metadata": {"someMetadataKey": "x"}}],
                          result_info={"count": 1, "cursor": "6Ck1la0VxJ0djhidm1MdX2FyD"}))
    api.get(f"{BASE}/keys", match=[matchers.query_param_matcher(
        {"limit": "1000", "prefix": "p", "cursor": "6Ck1la0VxJ0djhidm1MdX2FyD"})],
        json=envelope([{"name": "p2"}], result_info={"count": 1, "cursor": ""}))
    keys = list(fake_client.iter_keys(prefix="p"))
    assert [(k.name, k.expiration, k.metadata) for k in keys] == [
        ("p1", 1577836800, {"someMetadataKey": "x"}), ("p2", None, None)]


def test_list_last_page_without_cursor_field(fake_client, api):
    api.get(f"{BASE}/keys", json=envelope([{"name": "a"}], result_info={"count": 1}))
    assert fake_client.list_keys().cursor is None


def test_namespaces_are_listed_page_by_page_to_the_total(fake_client, api):
    url = f"https://api.cloudflare.com/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces"
    first = [{"id": f"n{i:03}", "title": f"t{i}"} for i in range(100)]
    api.get(url, match=[matchers.query_param_matcher({"page": "1", "per_page": "100"})],
            json=envelope(first, result_info={"total_count": 101}))
    api.get(url, match=[matchers.query_param_matcher({"page": "2", "per_page": "100"})],
            json=envelope([{"id": NS, "title": "last"}], result_info={"total_count": 101}))
    assert [ns["id"] for ns in fake_client.list_namespaces()] == [n["id"] for n in first] + [NS]


def test_errors_keep_no_response_so_pickling_them_cannot_leak_the_token(fake_client, api):
    api.get(f"{BASE}/values/k", json=failure(10000, "Authentication error"), status=403)
    with pytest.raises(KVAuthError) as info:
        fake_client.get("k")
    assert TOKEN.encode() not in pickle.dumps(info.value)


def test_validation_happens_before_any_io(fake_client, api):
    for call in (lambda: fake_client.get(".."), lambda: fake_client.put("k", b"v", expiration_ttl=30),
                 lambda: fake_client.put("k", b"v", metadata={"x": "y" * 2000}), lambda: fake_client.list_keys(limit=5),
                 lambda: fake_client.put("x" * 513, b"v"), lambda: fake_client.get_many(["ok", ""]),
                 lambda: fake_client.put_many([{"key": "ok", "value": "v"}, {"key": ".", "value": "v"}]),
                 lambda: fake_client.delete_many(["ok", "x" * 513])):
        with pytest.raises(KVValueError):
            call()
    assert len(api.calls) == 0
