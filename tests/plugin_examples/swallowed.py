"""The loopback guard: a call that would leave 127.0.0.1 fails the test, even when caught."""

from django_cfkv import transport
from django_cfkv.client import KVClient


def stray_client():
    return KVClient("f" * 32, "production-namespace", "production-token")


def test_lets_the_block_through(cfkv):
    stray_client().get("k")


def test_swallows_the_block(cfkv):
    before = transport.calls.total
    try:  # as code under test that tolerates KV failures would
        stray_client().get("k")
    except Exception:
        pass
    assert transport.calls.total == before  # nothing was sent


def test_emulator_calls_pass(cfkv):
    cfkv.put("k", b"v")
