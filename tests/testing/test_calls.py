"""django_cfkv.testing.calls: counting a block's KV API calls."""

import pytest

from django_cfkv.exceptions import KVRateLimitError
from django_cfkv.testing import KVCalls, assert_kv_calls


def test_assert_kv_calls(cfkv_emulator):
    client = cfkv_emulator.client()
    with assert_kv_calls(3) as calls:
        client.put("a", b"1")
        client.get("a")
        client.get_many(["a", "b"])
    assert calls.counts == {"bulk_get": 1, "get": 1, "put": 1}
    client.get("a")
    assert calls.total == 3  # frozen when the block ended

    with pytest.raises(AssertionError) as failed:
        with assert_kv_calls(1):
            client.get("a")
            client.get_with_metadata("a")
    assert str(failed.value) == ("3 != 1 : 3 KV API calls made, 1 expected. "
                                 "Calls by endpoint: get: 2, get_metadata: 1.")


def test_assert_kv_calls_lets_errors_in_the_block_through():
    with pytest.raises(ZeroDivisionError):
        with assert_kv_calls(5):
            raise ZeroDivisionError


def test_assert_kv_calls_counts_retries(cfkv_emulator):
    client = cfkv_emulator.client(max_retries=2)
    with cfkv_emulator.faults(rate_429=1.0, retry_after=0), pytest.raises(AssertionError, match="get: 3"):
        with assert_kv_calls(1), pytest.raises(KVRateLimitError):
            client.get("a")


def test_kv_calls_reset_and_repr(cfkv_emulator):
    client = cfkv_emulator.client()
    calls = KVCalls()
    client.put("a", b"1")
    assert calls["put"] == 1 and calls["get"] == 0
    calls.reset()
    assert calls.total == 0 and str(calls) == "none"
    client.delete("a")
    assert repr(calls) == "<KVCalls total=1 (delete: 1)>"
