"""Bad input on the KV layer, fuzzed with hypothesis: keys, values, metadata
and TTLs. Every input is either refused with a KVValueError before any I/O,
or stored and read back unchanged; a value operation never reaches any path
other than ``.../values/<the percent-encoded key>``."""

import json
import math
import re
from urllib.parse import quote, unquote

import pytest
import responses
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from django_cfkv import clock
from django_cfkv.client import KVClient
from django_cfkv.exceptions import KVValueError
from django_cfkv.local import LocalKV
from tests.support.faults import ACCOUNT, BASE, NS, TOKEN, envelope

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

HOSTILE_KEYS = [
    "/", "a/b", "../x", "..", ".", "%2F", "%2e%2e", "a%2F..%2Fb", "\x00", "a\x00b", "k" * 10_000,
    "é" * 300, "\u202e", "🔑", "?x=1", "#frag", " ", "\r\nX-Injected: 1", "\\..\\", "values/../keys",
    "%", "%%", "\ud800", "a" * 512, "a" * 513, "é" * 256, "é" * 257, "", "\t",
]

key_strategy = st.one_of(
    st.sampled_from(HOSTILE_KEYS),
    st.text(min_size=0, max_size=40),
    st.text(alphabet=st.sampled_from("./%2Fe\x00\\?#é "), max_size=12),
    st.text(min_size=500, max_size=600),
)


# KV's rules, written from Cloudflare's documentation (shared reference, section 5), not asked of
# django_cfkv.limits: the code under test must not decide what the test expects.
MAX_KEY_BYTES = 512
MAX_METADATA_BYTES = 1024
MIN_TTL = 60


def _is_valid_key(key):
    """A key is 1..512 bytes of UTF-8 (so no lone surrogate) and is neither "." nor ".."."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return 0 < size <= MAX_KEY_BYTES and key not in (".", "..")


def _is_seconds(value):
    """A number of seconds KV can take: an int or float (never a bool), finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _expiry_is_valid(expiration, ttl, now):
    """expiration_ttl (which wins when both are given) is at least 60 s; expiration at least 60 s from now."""
    if ttl is not None:
        return _is_seconds(ttl) and ttl >= MIN_TTL
    if expiration is not None:
        return _is_seconds(expiration) and expiration >= now + MIN_TTL
    return True


def _recording_api():
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    seen = []

    def reply(request):
        seen.append((request.method, request.path_url))
        if request.method == "GET" and "/values/" in request.path_url:
            return 200, {}, b"v"
        return 200, {"Content-Type": "application/json"}, json.dumps(envelope(None))

    for method in ("GET", "PUT", "DELETE", "POST"):
        mock.add_callback(method, re.compile(r"https://api\.cloudflare\.com/.*"), callback=reply)
    return mock, seen


@FUZZ
@given(key=key_strategy)
def test_value_operations_reach_only_the_encoded_key_path(key):
    client = KVClient(ACCOUNT, NS, TOKEN, max_retries=0)
    prefix = BASE[len("https://api.cloudflare.com"):] + "/values/"
    mock, seen = _recording_api()
    with mock:
        for method, call in [("PUT", lambda: client.put(key, b"v")), ("GET", lambda: client.get(key)),
                             ("DELETE", lambda: client.delete(key))]:
            if not _is_valid_key(key):
                with pytest.raises(KVValueError):
                    call()
                continue
            call()
            assert seen[-1] == (method, prefix + quote(key, safe=""))
            segment = seen[-1][1][len(prefix):]
            assert "/" not in segment and "?" not in segment and "#" not in segment
            assert unquote(segment) == key
    if not _is_valid_key(key):
        assert seen == []  # refused before any I/O


@FUZZ
@given(key=key_strategy, value=st.binary(max_size=300))
def test_emulator_stores_every_valid_key_under_its_own_name(cfkv_emulator, seen_paths, key, value):
    client = cfkv_emulator.client(max_retries=0)
    seen_paths.clear()
    if not _is_valid_key(key):
        with pytest.raises(KVValueError):
            client.put(key, value)
        assert seen_paths == []
        return
    client.put(key, value, metadata={"kind": "cache"})
    assert client.get(key) == value
    assert [k.name for k in client.iter_keys()] == [key]  # landed under its own name, nowhere else
    values = [p for p in seen_paths if "/values/" in p[1]]
    assert {p.split("/values/", 1)[1] for _, p in values} == {quote(key, safe="")}
    client.delete(key)
    assert client.get(key) is None
    client.close()


@pytest.mark.parametrize("key", ["..", ".", "", "a" * 513, "\ud800"])
def test_emulator_refuses_illegal_keys_sent_raw(cfkv_emulator, key):
    """Defence in depth: the server side refuses what a client might let through."""
    import requests

    raw = quote(key, safe="", errors="surrogatepass") if key != "\ud800" else "%ED%A0%80"
    url = f"{cfkv_emulator.base_url}/accounts/{cfkv_emulator.account_id}/storage/kv/namespaces/ns1/values/{raw}"
    response = requests.put(url, data=b"v", headers={"Authorization": f"Bearer {cfkv_emulator.token}"},
                            timeout=5)
    assert response.status_code in (400, 404, 414)
    assert response.json()["success"] is False


@FUZZ
@given(key=key_strategy, value=st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_local_kv_accepts_exactly_what_the_client_accepts(tmp_path_factory, key, value):
    kv = LocalKV(tmp_path_factory.getbasetemp() / "fuzz.sqlite3", namespace="fuzz")
    if not _is_valid_key(key):
        with pytest.raises(KVValueError):
            kv.put(key, value)
        return
    kv.put(key, value)
    expected = value.encode("utf-8") if isinstance(value, str) else value
    assert kv.get(key) == expected
    kv.delete(key)


@pytest.mark.parametrize("value", [None, 1, 1.5, ["a"], {"a": 1}, object(), True])
def test_values_that_are_not_bytes_or_text_are_refused_before_io(value):
    mock, seen = _recording_api()
    with mock:
        client = KVClient(ACCOUNT, NS, TOKEN, max_retries=0)
        with pytest.raises(KVValueError, match="bytes or str"):
            client.put("k", value)
        with pytest.raises(KVValueError, match="bytes or str"):
            client.put_many([{"key": "k", "value": value}])
    assert seen == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)


def _metadata_is_valid(meta):
    try:
        text = json.dumps(meta, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return False
    return len(text.encode()) <= MAX_METADATA_BYTES


@FUZZ
@given(meta=json_values)
def test_metadata_round_trips_or_is_refused(cfkv_emulator, seen_paths, meta):
    client = cfkv_emulator.client(max_retries=0)
    seen_paths.clear()
    if not _metadata_is_valid(meta):
        with pytest.raises(KVValueError, match="metadata"):
            client.put("k", b"v", metadata=meta)
        assert seen_paths == []
        return
    client.put("k", b"v", metadata=meta)
    got = client.get_metadata("k")
    # JSON does not keep -0.0 vs 0.0 apart on every path; compare through JSON.
    assert json.dumps(got, sort_keys=True) == json.dumps(json.loads(json.dumps(meta)), sort_keys=True)
    client.close()


@pytest.mark.parametrize("meta", [{"x": float("nan")}, {"x": math.inf}, {"x": object()}, {"x": "y" * 1100},
                                  {1: b"bytes"}])
def test_bad_metadata_says_what_to_fix(meta):
    client = KVClient(ACCOUNT, NS, TOKEN, max_retries=0)
    mock, seen = _recording_api()
    with mock, pytest.raises(KVValueError, match="metadata"):
        client.put("k", b"v", metadata=meta)
    assert seen == []


def test_a_write_with_bad_metadata_and_a_bad_expiry_names_the_metadata():
    """Metadata is checked before the expiry, as it always was: the error names the same mistake."""
    client = KVClient(ACCOUNT, NS, TOKEN, max_retries=0)
    mock, seen = _recording_api()
    with mock, pytest.raises(KVValueError) as caught:
        client.put("k", b"v", expiration_ttl=1, metadata={"x": float("nan")})
    assert caught.value.code == 10047 and seen == []  # INVALID_METADATA, and nothing sent


ttl_strategy = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "60", "abc", True, False, [], 59, 59.999, 60, 60.0, 61]),
)


@FUZZ
@given(ttl=ttl_strategy, expiration=ttl_strategy)
@example(ttl=math.nan, expiration=None)
@example(ttl=None, expiration=math.nan)
@example(ttl=math.inf, expiration=None)
@example(ttl=None, expiration=-math.inf)
@example(ttl=10**400, expiration=None)
def test_ttls_are_checked_before_io(ttl, expiration):
    mock, seen = _recording_api()
    client = KVClient(ACCOUNT, NS, TOKEN, max_retries=0)
    with mock:
        if not _expiry_is_valid(expiration, ttl, clock.now()):
            with pytest.raises(KVValueError):
                client.put("k", b"v", expiration=expiration, expiration_ttl=ttl)
            assert seen == []
            return
        client.put("k", b"v", expiration=expiration, expiration_ttl=ttl)
    assert len(seen) == 1
    query = seen[0][1].partition("?")[2]
    if ttl is not None:
        assert query == f"expiration_ttl={int(ttl)}" and int(ttl) >= MIN_TTL
    elif expiration is not None:
        assert query == f"expiration={int(expiration)}"
    else:
        assert query == ""
