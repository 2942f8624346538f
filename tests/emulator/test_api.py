"""The emulator speaks Cloudflare's documented wire format to any client, not only ours."""

import json
import time

import pytest
import requests


def errors(response):
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    return [e["code"] for e in body["errors"]]


def test_value_read_is_raw_with_expiration_header(ns):
    s, base = ns
    r = s.put(f"{base}/values/k%2Fx", data=b"\x00bytes", params={"expiration_ttl": 120})
    assert r.status_code == 200 and r.json() == {"success": True, "errors": [], "messages": [], "result": None}
    r = s.get(f"{base}/values/k%2Fx")
    assert r.content == b"\x00bytes" and r.headers["Content-Type"] == "application/octet-stream"
    assert int(r.headers["expiration"]) > time.time()


def test_missing_key_is_404_10009(ns):
    s, base = ns
    r = s.get(f"{base}/values/none")
    assert r.status_code == 404 and errors(r) == [10009]
    assert r.json()["errors"][0]["message"] == "get: 'key not found'"


def test_multipart_put_with_metadata_like_curl_form(ns):
    s, base = ns
    r = s.put(f"{base}/values/m", files={"value": (None, "Some Value"),
                                         "metadata": (None, '{"someMetadataKey": "someMetadataValue"}')})
    assert r.ok
    assert s.get(f"{base}/metadata/m").json()["result"] == {"someMetadataKey": "someMetadataValue"}
    listed = s.get(f"{base}/keys").json()
    assert listed["result"] == [{"name": "m", "metadata": {"someMetadataKey": "someMetadataValue"}}]
    assert listed["result_info"] == {"count": 1, "cursor": ""}


@pytest.mark.parametrize("params, status, code", [
    ({"expiration_ttl": "30"}, 400, 10034),
    ({"expiration_ttl": "abc"}, 400, 10034),
    ({"expiration": "60"}, 400, 10033),
])
def test_expiry_validation(ns, params, status, code):
    s, base = ns
    r = s.put(f"{base}/values/k", data=b"v", params=params)
    assert r.status_code == status and errors(r) == [code]


# Dot segments are sent percent-encoded: HTTP clients would otherwise resolve them away.
@pytest.mark.parametrize("key, status, code", [("%2E%2E", 400, 10042), ("%2E", 400, 10042), ("x" * 513, 414, 10030)])
def test_key_validation(ns, key, status, code):
    s, base = ns
    r = s.put(f"{base}/values/{key}", data=b"v")
    assert r.status_code == status and errors(r) == [code]


@pytest.mark.parametrize("path", ["/values/a/b", "/values/a/b/c", "/values//lead", "/values/trail/",
                                  "/metadata/a/b"])
def test_a_key_is_one_path_segment(ns, path):
    # Cloudflare routes the key of a value path as one segment: the key "a/b" comes as "a%2Fb".
    # A client that leaves "/" unencoded is refused, and never served "a/b", "a" or "/lead".
    s, base = ns
    for method in ("PUT", "GET", "DELETE"):
        r = s.request(method, base + path, data=b"v" if method == "PUT" else None)
        assert r.status_code == 404 and errors(r) == [7003], (method, path)
    assert s.get(f"{base}/keys").json()["result"] == []
    assert s.put(f"{base}/values/a%2Fb", data=b"v").ok
    assert s.get(f"{base}/values/a%2Fb").content == b"v"
    assert [k["name"] for k in s.get(f"{base}/keys").json()["result"]] == ["a/b"]


def test_oversized_metadata_is_413_10047(ns):
    s, base = ns
    r = s.put(f"{base}/values/k", files={"value": (None, "v"), "metadata": (None, json.dumps({"x": "y" * 2000}))})
    assert r.status_code == 413 and errors(r) == [10047]


def test_list_limit_bounds(ns):
    s, base = ns
    for limit in (9, 1001, "x"):
        r = s.get(f"{base}/keys", params={"limit": limit})
        assert r.status_code == 400 and errors(r) == [10028]


def test_bulk_write_get_delete_shapes(ns):
    s, base = ns
    r = s.put(f"{base}/bulk", json=[{"key": "a", "value": "1"}, {"key": "b", "value": "/wA=", "base64": True},
                                    {"key": "c", "value": '{"x": 1}', "metadata": {"m": 2}, "expiration_ttl": 300}])
    assert r.json()["result"] == {"successful_key_count": 3, "unsuccessful_keys": []}
    assert s.get(f"{base}/values/b").content == b"\xff\x00"
    r = s.post(f"{base}/bulk/get", json={"keys": ["a", "c", "zz"]})
    assert r.json()["result"] == {"values": {"a": "1", "c": '{"x": 1}', "zz": None}}
    r = s.post(f"{base}/bulk/get", json={"keys": ["c"], "type": "json", "withMetadata": True})
    value = r.json()["result"]["values"]["c"]
    assert value["value"] == {"x": 1} and value["metadata"] == {"m": 2} and value["expiration"] > time.time()
    r = s.post(f"{base}/bulk/get", json={"keys": [f"k{i}" for i in range(101)]})
    assert r.status_code == 400
    r = s.post(f"{base}/bulk/delete", json=["a", "b"])
    assert r.json()["result"] == {"successful_key_count": 2, "unsuccessful_keys": []}
    r = s.delete(f"{base}/bulk", json=["c"])  # the deprecated form still works
    assert r.ok and s.get(f"{base}/keys").json()["result"] == []


def test_bulk_limits(ns):
    s, base = ns
    r = s.put(f"{base}/bulk", json=[{"key": f"k{i}", "value": "v"} for i in range(10001)])
    assert r.status_code == 400
    r = s.post(f"{base}/bulk/delete", json=[f"k{i}" for i in range(10001)])
    assert r.status_code == 400


def test_namespaces_list_and_create(cfkv_emulator):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {cfkv_emulator.token}"
    url = f"{cfkv_emulator.base_url}/accounts/{cfkv_emulator.account_id}/storage/kv/namespaces"
    title = f"t-{time.time()}"
    created = s.post(url, json={"title": title}).json()["result"]
    assert len(created["id"]) == 32 and created["title"] == title
    again = s.post(url, json={"title": title})
    assert again.status_code == 400 and errors(again) == [10014]
    listed = s.get(url, params={"per_page": 1000}).json()
    assert {"id": created["id"], "title": title, "supports_url_encoding": True} in listed["result"]
    assert set(listed["result_info"]) == {"count", "page", "per_page", "total_count"}


def test_namespace_list_order_direction_and_pages(namespaces):
    s, url = namespaces
    made = {t: s.post(url, json={"title": t}).json()["result"]["id"] for t in ["beta", "alpha", "gamma"]}
    by_id = sorted(made.values())

    def listed(**params):
        body = s.get(url, params=params).json()
        assert body["success"], body
        return [n["title"] if params.get("order") == "title" else n["id"] for n in body["result"]]

    assert listed(order="title") == ["alpha", "beta", "gamma"]
    assert listed(order="title", direction="asc") == ["alpha", "beta", "gamma"]
    assert listed(order="title", direction="desc") == ["gamma", "beta", "alpha"]
    assert listed(order="id", direction="desc") == by_id[::-1]
    assert listed() == by_id and listed(direction="desc") == by_id[::-1]
    # What wrangler asks for, paged.
    assert listed(order="title", direction="asc", per_page=2, page=2) == ["gamma"]
    assert listed(order="title", per_page=2, page=3) == []
    body = s.get(url, params={"per_page": 2, "page": 2}).json()
    assert body["result_info"] == {"count": 1, "page": 2, "per_page": 2, "total_count": 3}
    for params, code in [({"order": "size"}, 10043), ({"direction": "up"}, 10044), ({"page": 0}, 10007),
                         ({"page": "x"}, 10007), ({"per_page": 0}, 10008), ({"per_page": 1001}, 10008)]:
        response = s.get(url, params=params)
        assert response.status_code == 400 and errors(response) == [code], params


def test_namespace_rename(namespaces):
    s, url = namespaces
    first = s.post(url, json={"title": "first"}).json()["result"]["id"]
    s.post(url, json={"title": "taken"})
    r = s.put(f"{url}/{first}", json={"title": "renamed"})
    assert r.status_code == 200
    assert r.json()["result"] == {"id": first, "title": "renamed", "supports_url_encoding": True}
    assert s.get(f"{url}/{first}").json()["result"]["title"] == "renamed"
    assert sorted(n["title"] for n in s.get(url).json()["result"]) == ["renamed", "taken"]
    assert s.post(url, json={"title": "first"}).ok  # the old title is free again
    for body, code in [({"title": "taken"}, 10014), ({}, 10019), ({"title": ""}, 10019),
                       ({"title": "x" * 513}, 10029), ("not an object", 10019)]:
        r = s.put(f"{url}/{first}", json=body)
        assert r.status_code == 400 and errors(r) == [code], body
    assert s.get(f"{url}/{first}").json()["result"]["title"] == "renamed"


def test_namespace_delete_removes_its_keys_and_title(namespaces):
    s, url = namespaces
    gone = s.post(url, json={"title": "doomed"}).json()["result"]["id"]
    kept = s.post(url, json={"title": "kept"}).json()["result"]["id"]
    for ns in (gone, kept):
        assert s.put(f"{url}/{ns}/bulk", json=[{"key": f"k{i}", "value": "v"} for i in range(3)]).ok
    r = s.delete(f"{url}/{gone}")
    assert r.status_code == 200 and r.json() == {"success": True, "errors": [], "messages": [], "result": None}
    assert [n["id"] for n in s.get(url).json()["result"]] == [kept]
    assert s.get(f"{url}/{gone}/keys").json()["result"] == []
    assert s.get(f"{url}/{gone}/values/k0").status_code == 404
    assert len(s.get(f"{url}/{kept}/keys").json()["result"]) == 3
    assert s.post(url, json={"title": "doomed"}).ok  # the title can be used again


def test_auth_required(cfkv_emulator):
    url = f"{cfkv_emulator.base_url}/accounts/a/storage/kv/namespaces/n/values/k"
    assert requests.get(url).status_code == 401
    r = requests.get(url, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and errors(r) == [10000]


def test_unknown_routes_are_404(ns):
    s, base = ns
    for url in (f"{base}/nothing", base.replace("/storage/kv", "/storage/xx"), f"{base}/values"):
        r = s.get(url)
        assert r.status_code == 404 and errors(r) == [7003]


def test_fault_injection_and_ratelimit_header(ns, cfkv_emulator):
    s, base = ns
    cfkv_emulator.set_faults(rate_429=1.0, retry_after=7)
    r = s.get(f"{base}/values/k")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    cfkv_emulator.set_faults(rate_429=0.0, rate_503=1.0)
    assert s.get(f"{base}/values/k").status_code == 503
    cfkv_emulator.clear_faults()
    r = s.get(f"{base}/values/k")
    assert r.status_code == 404 and r.headers["Ratelimit"].startswith('"default";r=')


@pytest.mark.parametrize("error, status, code", [
    # Texts that read as another refusal: the answer follows the error's code, never its words.
    (dict(message="expiration_ttl: metadata over its limit", code=10033), 400, 10033),
    (dict(message="a value of 25 MiB of metadata", code=10034), 400, 10034),
    (dict(message="the expiration is fine", code=10047, too_large=True), 413, 10047),
    (dict(message="metadata limit expiration 25 MiB"), 400, 10029),
])
def test_store_refusals_are_answered_from_the_error_code_not_its_text(ns, monkeypatch, error, status, code):
    from django_cfkv.exceptions import KVValueError
    from django_cfkv.local import LocalKV

    def refuse(self, items):
        error_args = dict(error)
        raise KVValueError(error_args.pop("message"), **error_args)

    monkeypatch.setattr(LocalKV, "put_many", refuse)
    s, base = ns
    r = s.put(f"{base}/bulk", json=[{"key": "a", "value": "1"}])
    assert r.status_code == status and errors(r) == [code]


def test_the_store_names_each_refusal_with_cloudflares_code(tmp_path):
    from django_cfkv import limits
    from django_cfkv.exceptions import KVValueError
    from django_cfkv.local import LocalKV

    kv = LocalKV(tmp_path / "kv.sqlite3")
    cases = [
        (lambda: kv.put("k", b"v", expiration_ttl=30), limits.INVALID_EXPIRATION_TTL, False),
        (lambda: kv.put("k", b"v", expiration=1), limits.INVALID_EXPIRATION, False),
        (lambda: kv.put("k", b"v", metadata={"x": "y" * 2000}), limits.INVALID_METADATA, True),
        (lambda: kv.put("k", b"v", metadata={"x": float("nan")}), limits.INVALID_METADATA, False),
        (lambda: kv.put("k", b"v" * (limits.MAX_VALUE_BYTES + 1)), limits.PAYLOAD_TOO_LARGE, True),
        (lambda: kv.put("k" * 513, b"v"), limits.KEY_TOO_LONG, True),
        (lambda: kv.put("..", b"v"), limits.INVALID_KEY, False),
        (lambda: kv.list_keys(limit=5), limits.INVALID_LIST_LIMIT, False),
        (lambda: kv.list_keys(cursor="é"), limits.INVALID_CURSOR, False),
    ]
    for call, code, too_large in cases:
        with pytest.raises(KVValueError) as caught:
            call()
        assert (caught.value.code, caught.value.too_large) == (code, too_large), caught.value


TRICKY_VALUES = {
    "every byte": bytes(range(256)) * 4,
    "line endings": b"a\r\nb\nc\rd\r\n\r\n",
    "ends in CRLF": b"value\r\n",
    "ends in LF": b"value\n",
    "a boundary-like line": b"--\r\n--x--\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{}",
    "empty": b"",
}


@pytest.mark.parametrize("value", TRICKY_VALUES.values(), ids=TRICKY_VALUES)
def test_a_multipart_value_is_stored_byte_for_byte(ns, value):
    """A value written as a form with metadata (as every client that sends metadata writes it) is read
    back exactly: the form's parser keeps line endings and bytes that are not text."""
    s, base = ns
    r = s.put(f"{base}/values/m", files={"value": ("blob", value, "application/octet-stream"),
                                         "metadata": (None, '{"n": 1}')})
    assert r.ok, r.text
    assert s.get(f"{base}/values/m").content == value
    assert s.get(f"{base}/metadata/m").json()["result"] == {"n": 1}


FORM_NAMES = {
    "unquoted": ("value", '"metadata"'),
    "rfc 2231": ("*=utf-8''value", "*=UTF-8''%6Detadata"),
    "rfc 2231 with a language": ("*=utf-8'en'value", '"metadata"'),
}


@pytest.mark.parametrize("value_name, metadata_name", FORM_NAMES.values(), ids=FORM_NAMES)
def test_a_form_field_named_in_another_spelling_is_read(ns, value_name, metadata_name):
    """Part names in the forms' other spellings: unquoted, and RFC 2231's (as Django's own form parser reads
    them); a quoted filename holding a semicolon does not end the name."""
    s, base = ns
    boundary = "XyZ"
    name = {"value": f"name{'' if value_name.startswith('*') else '='}{value_name}",
            "metadata": f"name{'' if metadata_name.startswith('*') else '='}{metadata_name}"}
    body = (f"--{boundary}\r\nContent-Disposition: form-data; {name['value']}; filename=\"a;b.bin\"\r\n\r\nv1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; {name['metadata']}\r\n\r\n{{\"k\": \"v\"}}\r\n"
            f"--{boundary}--\r\n").encode()
    r = s.put(f"{base}/values/q", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.ok, r.text
    assert s.get(f"{base}/values/q").content == b"v1"
    assert s.get(f"{base}/metadata/q").json()["result"] == {"k": "v"}


def test_a_part_header_that_is_not_text_is_a_400(ns):
    """A part's Content-Disposition with a byte that is not ASCII and a bare "*" is an answer (no value
    field), not a 500 (the HTTP policy raised IndexError on it)."""
    s, base = ns
    body = b"--b\r\nContent-Disposition: form-data; \xff*\r\n\r\nv\r\n--b--\r\n"
    r = s.put(f"{base}/values/q", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and errors(r) == [10012]


@pytest.mark.parametrize("route", ["bulk", "bulk/get"])
def test_json_nested_past_the_recursion_limit_is_a_400(ns, route):
    """A client's JSON body of "[" * 100000 is refused as bad JSON, not answered 500. (Form metadata cannot
    nest that deep within its 1,024 bytes.)"""
    s, base = ns
    nested = "[" * 100_000
    send = s.put if route == "bulk" else s.post
    r = send(f"{base}/{route}", data=nested, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text


def test_a_failure_is_logged_with_the_requests_path_as_one_line_of_escapes(tmp_path, monkeypatch, caplog):
    """A client of the emulator chooses the path it asks for (any byte but a space or a line end, read as
    Latin-1): a failure's log line shows it escaped."""
    import logging
    import sqlite3

    from django_cfkv.emulator import EmulatorApp

    app = EmulatorApp(tmp_path / "kv.sqlite3")

    def locked(*args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(app, "_answer", locked)
    path = "/client/v4/accounts/a\x1b]52;c;cHduZWQ=\x07\x1b[2K\x9b31m/storage/kv/namespaces/n/keys"
    with caplog.at_level(logging.ERROR):
        status, _, _ = app.handle({"REQUEST_METHOD": "GET", "PATH_INFO": path, "RAW_URI": path})
    assert status == 500
    [record] = [r for r in caplog.records if r.getMessage().startswith("The emulator failed on")]
    assert record.getMessage().isprintable(), record.getMessage()
    assert "a\\x1b]52;c;cHduZWQ=\\x07\\x1b[2K\\x9b31m/storage" in record.getMessage()
