"""KV's limits, checked against Cloudflare's published rules (shared reference, sections 4-6), without I/O.

Every expected value is written here from the rules, never read from django_cfkv.limits: a limit
moved by one byte, a comparison turned round or an error code changed must fail a test.
"""

import json
import math
import re

import pytest

from django_cfkv import clock, limits
from django_cfkv.exceptions import KVValueError

NOW = 1_900_000_000.0
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch):
    monkeypatch.setattr(clock, "now", lambda: NOW)


def refused(call, *args, **kwargs):
    """Return the KVValueError ``call`` raises."""
    with pytest.raises(KVValueError) as info:
        call(*args, **kwargs)
    return info.value


def test_the_published_limits():
    assert (limits.MAX_KEY_BYTES, limits.MAX_VALUE_BYTES, limits.MAX_METADATA_BYTES) == (512, 25 * MiB, 1024)
    assert (limits.MIN_TTL, limits.LIST_MIN_LIMIT, limits.LIST_MAX_LIMIT) == (60, 10, 1000)
    assert (limits.BULK_WRITE_MAX_ITEMS, limits.BULK_WRITE_MAX_BYTES) == (10_000, 100_000_000)
    assert (limits.BULK_DELETE_MAX_KEYS, limits.BULK_GET_MAX_KEYS) == (10_000, 100)
    assert (limits.MAX_NAMESPACES, limits.MAX_NAMESPACE_TITLE, limits.QUOTA_BLOCK_SECONDS) == (1000, 512, 300)
    assert limits.MAX_RESPONSE_BYTES == 26 * MiB  # one value, or one value's worth of envelope


def test_cloudflares_error_codes():
    assert (limits.PAYLOAD_TOO_LARGE, limits.INVALID_LIST_LIMIT, limits.INVALID_REQUEST, limits.KEY_TOO_LONG) == (
        10024, 10028, 10029, 10030)
    assert (limits.INVALID_EXPIRATION, limits.INVALID_EXPIRATION_TTL, limits.INVALID_CURSOR) == (10033, 10034, 10041)
    assert (limits.INVALID_KEY, limits.INVALID_METADATA) == (10042, 10047)


# Keys: 1..512 bytes of UTF-8, never "." or ".."

@pytest.mark.parametrize("key", ["k", "a" * 512, "é" * 256, "🔑" * 128, "..x", ".a", "a/b", " ", "\x00"])
def test_keys_kv_accepts_are_returned_as_given(key):
    assert limits.validate_key(key) is key


@pytest.mark.parametrize("key, code, too_large", [
    ("", 10042, False), (".", 10042, False), ("..", 10042, False), ("\ud800", 10042, False),
    ("a" * 513, 10030, True), ("é" * 256 + "a", 10030, True), ("🔑" * 128 + "a", 10030, True),
])
def test_keys_kv_refuses_say_why(key, code, too_large):
    error = refused(limits.validate_key, key)
    assert (error.code, error.too_large) == (code, too_large)
    if too_large:
        assert f"{len(key.encode())} bytes" in str(error) and "512" in str(error)


@pytest.mark.parametrize("key", [None, b"k", 1, ["k"]])
def test_a_key_must_be_text(key):
    assert "must be str" in str(refused(limits.validate_key, key))


# Values: bytes or text, at most 25 MiB

@pytest.mark.parametrize("value, stored", [(b"v", b"v"), ("é", "é".encode()), (bytearray(b"ab"), b"ab"),
                                           (memoryview(b"cd"), b"cd"), (b"", b"")])
def test_values_are_bytes(value, stored):
    assert limits.validate_value(value) == stored and type(limits.validate_value(value)) is bytes


def test_a_value_of_exactly_25_mib_is_taken_and_one_byte_more_is_not():
    assert len(limits.validate_value(b"x" * (25 * MiB))) == 25 * MiB
    error = refused(limits.validate_value, b"x" * (25 * MiB + 1))
    assert (error.code, error.too_large) == (10024, True) and "25 MiB" in str(error)
    assert refused(limits.validate_value, "é" * (25 * MiB // 2) + "a").code == 10024  # counted in bytes


@pytest.mark.parametrize("value", [None, 1, 1.5, ["a"], {"a": 1}, True])
def test_other_values_are_refused(value):
    assert "bytes or str" in str(refused(limits.validate_value, value))


# Metadata: JSON, at most 1024 bytes

def test_metadata_is_compact_json_text():
    assert limits.encode_metadata(None) is None
    assert limits.encode_metadata({"a": [1, "é"]}) == '{"a":[1,"\\u00e9"]}'


def test_metadata_of_exactly_1024_bytes_is_taken_and_one_byte_more_is_not():
    fits = {"x": "y" * (1024 - len('{"x":""}'))}
    assert len(limits.encode_metadata(fits)) == 1024
    error = refused(limits.encode_metadata, {"x": "y" * (1025 - len('{"x":""}'))})
    assert (error.code, error.too_large) == (10047, True) and "1025 bytes" in str(error)


@pytest.mark.parametrize("metadata", [{"x": math.nan}, {"x": math.inf}, {"x": object()}, {"x": b"b"}])
def test_metadata_json_cannot_carry_is_refused(metadata):
    error = refused(limits.encode_metadata, metadata)
    assert (error.code, error.too_large) == (10047, False) and "JSON" in str(error)


# Expiry: expiration_ttl >= 60 s, or an expiration at least 60 s from now; the TTL wins

@pytest.mark.parametrize("expiration, ttl, expires", [
    (None, None, None), (None, 60, NOW + 60), (None, 60.5, NOW + 60), (None, 86_400, NOW + 86_400),
    (NOW + 60, None, NOW + 60), (NOW + 3600.9, None, NOW + 3600), (1, 120, NOW + 120),  # the TTL wins
])
def test_expiries_kv_takes_are_returned_in_epoch_seconds(expiration, ttl, expires):
    found = limits.validate_expiry(expiration, ttl)
    assert found == expires and (found is None or type(found) is int)


@pytest.mark.parametrize("expiration, ttl, code", [
    (None, 59, 10034), (None, 59.999, 10034), (None, 0, 10034), (None, -60, 10034),
    (None, math.nan, 10034), (None, math.inf, 10034), (None, "60", 10034), (None, True, 10034), (None, 10**400, 10034),
    (NOW + 59, None, 10033), (NOW + 59.999, None, 10033), (NOW, None, 10033), (1, None, 10033),
    (math.nan, None, 10033), (-math.inf, None, 10033), ("soon", None, 10033), (False, None, 10033),
])
def test_expiries_kv_refuses_say_why(expiration, ttl, code):
    assert refused(limits.validate_expiry, expiration, ttl).code == code


def test_an_expiry_too_soon_says_kv_needs_60_seconds():
    assert "at least 60 seconds" in str(refused(limits.validate_expiry, None, 30))
    assert "at least 60 seconds in the future" in str(refused(limits.validate_expiry, NOW + 30, None))


def test_expiry_arguments_may_be_named_and_now_only_by_name():
    assert limits.validate_expiry(expiration=NOW + 60) == NOW + 60
    assert limits.validate_expiry(expiration_ttl=90, now=1000) == 1090
    with pytest.raises(TypeError):
        limits.validate_expiry(None, 90, 1000)  # a third argument by position is a mistake, not "now"


def test_expiry_is_measured_from_the_now_given():
    assert limits.validate_expiry(1060, now=1000) == 1060
    assert refused(limits.validate_expiry, 1059, now=1000).code == 10033
    assert limits.validate_expiry(None, 60, now=1000) == 1060


# List page sizes: 10..1000

@pytest.mark.parametrize("limit", [10, 11, 999, 1000])
def test_list_limits_kv_takes(limit):
    assert limits.validate_list_limit(limit) == limit


@pytest.mark.parametrize("limit", [9, 0, -1, 1001, 10**6, 10.0, "10", True, None])
def test_list_limits_kv_refuses(limit):
    assert refused(limits.validate_list_limit, limit).code == 10028


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("007", 7), ("123456789", 123456789),
    ("1234567890", None),  # one digit past the cap
    ("", None), ("-1", None), ("+1", None), (" 1", None), ("1_000", None), ("1.0", None),
    ("²", None), ("١٢", None), ("9" * 5000, None),  # digits to isdigit() that int() refuses or cannot read
])
def test_parse_digits_takes_only_ascii_digits_within_the_cap(text, expected):
    assert limits.parse_digits(text, 9) == expected


@pytest.mark.parametrize("text", ["[" * 100_000, b"{" + b'"a":{' * 100_000, "nope", b"\xff", ""])
def test_loads_json_refuses_what_json_cannot_read_with_a_value_error(text):
    """JSON nested past the recursion limit is a ValueError (json raises RecursionError), as bad JSON and
    bytes that are not UTF-8 are."""
    with pytest.raises(ValueError):
        limits.loads_json(text)


@pytest.mark.parametrize("text", [
    '{"success":true,"errors":[],"messages":[],"result":null}', " {} ", "\t[1]\n", "{}{}", "{} x", "1 2", "\ufeff{}",
    "NaN", '"\\ud800"', '{"a":1,"a":2}', "", " ", "[", "tru", "1e400", "-0", '"x"',
])
def test_loads_json_reads_str_as_json_loads_does(text):
    try:
        expected = json.loads(text)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc).split(":")[0])):
            limits.loads_json(text)
    else:
        assert repr(limits.loads_json(text)) == repr(expected)


def test_loads_json_reads_json():
    assert limits.loads_json(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    deep = limits.loads_json("[" * 500 + "]" * 500)  # deep, but within what json reads
    for _ in range(499):
        assert len(deep) == 1
        deep = deep[0]
    assert deep == []
