"""The loopback guard: a call that would leave 127.0.0.1 fails the test, even when caught."""

import asyncio

import pytest

from django_cfkv import transport
from django_cfkv.client import KVClient
from django_cfkv.testing import KVNetworkBlocked


def stray_client():
    return KVClient("f" * 32, "production-namespace", "production-token")


def test_lets_the_block_through(cfkv):
    stray_client().get("k")


def tolerant_lookup():
    """Code under test that treats any KV failure as a miss."""
    try:
        return stray_client().get("k")
    except Exception:
        return None


def test_swallows_the_block(cfkv):
    before = transport.calls.total
    assert tolerant_lookup() is None
    assert transport.calls.total == before  # nothing was sent


def test_expects_the_block(cfkv):
    with pytest.raises(KVNetworkBlocked):  # the test saw it: nothing more to report
        stray_client().get("k")


def test_emulator_calls_pass(cfkv):
    cfkv.put("k", b"v")


async def tolerant_async_lookup():
    """Async code under test that treats any KV failure as a miss."""
    try:
        return await stray_client().aget("k")
    except Exception:
        return None


def test_swallows_an_awaited_block(cfkv):
    before = transport.calls.total
    assert asyncio.run(tolerant_async_lookup()) is None
    assert transport.calls.total == before  # nothing was sent


def test_expects_an_awaited_block(cfkv):
    with pytest.raises(KVNetworkBlocked):
        asyncio.run(stray_client().aget("k"))
