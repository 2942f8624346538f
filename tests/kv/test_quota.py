"""Which 429 may stop other calls, and for how long.

Only Cloudflare's REST quota speaks for the whole account: past 1,200 calls per
5 minutes every call is refused for five minutes, and its ``Ratelimit`` header
counts no call left (shared reference, section 6). A 429 about one key (one
write per second) or one call fails that call alone, whatever its Retry-After.
Each test runs on the blocking client and on the async one (``as_mode``).
"""

import pytest

from django_cfkv import clock as cfkv_clock
from django_cfkv import limits
from django_cfkv.exceptions import KVError, KVRateLimitError
from tests.support.faults import failure

QUOTA_SPENT = '"default";r=0;t=240'
TOO_MANY = failure(10022, "too many requests")


def _refused_without_io(scripted_client, key="other"):
    with pytest.raises(KVRateLimitError, match="no call was sent") as info:
        scripted_client.put(key, b"v")
    return info.value


@pytest.mark.parametrize("headers", [
    {"Retry-After": "1"},
    {"Retry-After": "300"},
    {"Retry-After": "315360000"},
    {},
    {"Retry-After": "300", "Ratelimit": '"default";r=57;t=240'},
], ids=["1s", "300s", "ten-years", "none", "budget-left"])
def test_a_429_that_does_not_speak_for_the_account_leaves_other_calls_alone(scripted, scripted_client, slept, headers):
    scripted.put("/values/busy", status=429, headers=headers, json=TOO_MANY)
    scripted.put("/values/other", json={"success": True, "errors": [], "messages": [], "result": None})
    with pytest.raises(KVRateLimitError) as info:
        scripted_client.put("busy", b"v")
    scripted_client.put("other", b"v")  # sent, and written
    assert [c.path.rsplit("/", 1)[1] for c in scripted.calls][-1] == "other"
    assert info.value.account_wide is False  # callers (the limiter) may keep calling KV
    assert info.value.retry_after is None or info.value.retry_after <= limits.QUOTA_BLOCK_SECONDS


@pytest.mark.parametrize("retry_after, blocked", [("300", 300), ("315360000", 300), ("60", 60), (None, 240)])
def test_the_quota_429_stops_every_call_for_at_most_five_minutes(scripted, scripted_client, slept, retry_after,
                                                                 blocked):
    headers = {"Ratelimit": QUOTA_SPENT, **({"Retry-After": retry_after} if retry_after else {})}
    scripted.get("/values/k", status=429, headers=headers, json=TOO_MANY)
    with pytest.raises(KVRateLimitError) as info:
        scripted_client.get("k")
    assert info.value.retry_after is None or info.value.retry_after <= limits.QUOTA_BLOCK_SECONDS
    sent = len(scripted.calls)
    error = _refused_without_io(scripted_client)
    assert len(scripted.calls) == sent  # spared: Cloudflare would refuse it anyway
    assert blocked - 5 < error.retry_after <= blocked
    assert info.value.account_wide and error.account_wide


def test_a_blocked_alias_calls_again_once_the_block_is_over(scripted, scripted_client, slept, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(cfkv_clock, "monotonic", lambda: clock[0])
    scripted.get("/values/k", status=429, headers={"Ratelimit": QUOTA_SPENT, "Retry-After": "315360000"},
            json=TOO_MANY)
    with pytest.raises(KVRateLimitError):
        scripted_client.get("k")
    clock[0] += limits.QUOTA_BLOCK_SECONDS - 1
    _refused_without_io(scripted_client)
    clock[0] += 2  # ten years were asked for; five minutes is all Cloudflare ever blocks
    scripted.put("/values/other", json={"success": True, "errors": [], "messages": [], "result": None})
    scripted_client.put("other", b"v")


def test_injected_per_call_429s_under_load_refuse_no_other_call(emulator, slept, as_mode):
    """Many 429s that outlast the retries (one write per second per key, or one call): each fails
    its own call, and not one other call is refused in this process."""
    made = emulator.client(max_retries=1, timeout=2.0)
    client = as_mode(made)
    emulator.reset_quota()  # past 1,200 calls in the session, its Ratelimit header says the quota is spent
    emulator.set_faults(rate_429=0.3, retry_after=1)
    outcomes = {"ok": 0, "429": 0, "refused": 0}
    try:
        for i in range(300):
            try:
                (client.put if i % 2 else client.get)(f"session:{i % 37}", *([b"v"] if i % 2 else []))
                outcomes["ok"] += 1
            except KVRateLimitError as exc:
                outcomes["refused" if "no call was sent" in str(exc) else "429"] += 1
            except KVError:
                outcomes["429"] += 1  # a bulk/other wrapper of the same 429
    finally:
        emulator.clear_faults()
        made.close()
    assert outcomes["429"] > 5  # 429s outlasted the retries many times...
    assert outcomes["refused"] == 0  # ...and never stopped another call
    assert outcomes["ok"] + outcomes["429"] == 300
