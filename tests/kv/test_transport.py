"""The transport: retries and their waits, Retry-After in both of its forms, the deadline, timeouts,
the budget Cloudflare reports, and call accounting, each on the blocking client and the async one
(``scripted_client`` and ``as_mode``: one loopback server, both clients). The retry policy is also
tested on its own: it does no I/O, so it needs no server."""

import time
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
import requests

from django_cfkv import clock as cfkv_clock
from django_cfkv import limits
from django_cfkv.client import KVClient
from django_cfkv.exceptions import KVAPIError, KVConnectionError, KVRateLimitError, KVTimeout
from django_cfkv.transport import RetryPolicy, parse_retry_after
from django_cfkv.transport.policy import Attempts
from tests.support.faults import ACCOUNT, BASE, NS, TOKEN, envelope, failure

NOW = 1_900_000_000  # a whole second: HTTP dates carry no fraction
UNAVAILABLE = failure(10001, "service temporarily unavailable")
TOO_MANY = failure(10022, "too many requests")


def _http_date(epoch):
    return format_datetime(datetime.fromtimestamp(epoch, timezone.utc), usegmt=True)


@pytest.fixture
def fixed_now(monkeypatch):
    monkeypatch.setattr(cfkv_clock, "now", lambda: float(NOW))


# Retry-After

@pytest.mark.parametrize("value, seconds", [
    ("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("301", 300.0), ("nan", None), ("soon", None), ("", None), (None, None),
    (_http_date(NOW + 120), 120.0), (_http_date(NOW + 1), 1.0), (_http_date(NOW - 30), 0.0),
    (_http_date(NOW + 86_400), 300.0),
])
def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped(fixed_now, value, seconds):
    """An HTTP date counts from now: a date 120 s ahead is a 120 s wait; one past is no wait."""
    assert parse_retry_after(value) == seconds


def test_an_http_date_retry_after_is_waited_for_until_that_date(scripted_client, scripted, slept, fixed_now):
    scripted.get("/values/k", status=429, headers={"Retry-After": _http_date(NOW + 2)}, json=TOO_MANY)
    scripted.get("/values/k", body=b"v")
    assert scripted_client.get("k") == b"v"
    assert slept == [2.0]


def test_an_http_date_retry_after_past_the_deadline_is_the_errors_retry_after(scripted_client, scripted, slept,
                                                                              fixed_now):
    scripted.get("/values/k", status=429, headers={"Retry-After": _http_date(NOW + 240)}, json=TOO_MANY)
    with pytest.raises(KVRateLimitError) as info:
        scripted_client.get("k")
    assert info.value.retry_after == 240 and not slept and len(scripted.calls) == 1


def test_a_long_retry_after_is_not_waited_for(scripted_client, scripted, slept):
    """A Retry-After past the call's deadline fails at once rather than hold a web request."""
    scripted.get("/values/k", status=429, headers={"Retry-After": "300"}, json=TOO_MANY)
    with pytest.raises(KVRateLimitError) as info:
        scripted_client.get("k")
    assert info.value.retry_after == 300 and "300" in str(info.value)
    assert len(scripted.calls) == 1 and not slept


# Backoff and the deadline

def test_retries_503_with_capped_backoff(scripted_client, scripted, slept):
    scripted.get("/values/k", status=503, json=UNAVAILABLE)
    scripted.get("/values/k", status=503, json=UNAVAILABLE)
    scripted.get("/values/k", body=b"v")
    assert scripted_client.get("k") == b"v"
    assert slept == [0.125, 0.25]  # half the backoff; jitter fixed at none


def test_deadline_caps_total_waiting(scripted, as_mode, monkeypatch):
    now = [0.0]

    async def asleep(seconds):
        now[0] += seconds

    monkeypatch.setattr(cfkv_clock, "monotonic", lambda: now[0])
    monkeypatch.setattr(cfkv_clock, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    monkeypatch.setattr(cfkv_clock, "asleep", asleep)
    made = KVClient(ACCOUNT, NS, TOKEN, base_url=scripted.base_url, max_retries=3, deadline=0.5)
    monkeypatch.setattr(made.transport.policy, "jitter", lambda span: 0.0)
    scripted.get("/values/k", status=503, json=UNAVAILABLE)
    with pytest.raises(KVAPIError) as info:
        as_mode(made).get("k")
    made.close()
    # Backoffs of 0.125 and 0.25 s fit in 0.5 s; the next (0.5 s) would not, so the 503 is raised.
    assert len(scripted.calls) == 3 and info.value.status == 503 and now[0] == 0.375


def test_timeout_maps_to_kvtimeout_without_the_key(listener, as_mode, slept):
    key = "session:abcdef0123456789abcdef0123456789"  # a key can be a credential
    made = KVClient(ACCOUNT, NS, TOKEN, base_url=listener("silent").base_url, timeout=0.2, max_retries=0)
    with pytest.raises(KVTimeout) as info:
        as_mode(made).get(key)
    made.close()
    assert "Timeout" in str(info.value) and "127.0.0.1" in str(info.value) and "get" in str(info.value)
    assert "abcdef0123" not in str(info.value) and info.value.__cause__ is None


def test_every_call_has_a_timeout(fake_client, api, monkeypatch):
    seen = []
    original = requests.Session.request

    def spy(self, method, url, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    api.get(f"{BASE}/values/k", body=b"v")
    fake_client.get("k")
    [(connect, read)] = seen
    assert connect == 5.0 and 29 < read <= 30.0  # the read part never outlasts the 30 s deadline


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


# The policy alone: "retry after N s" or "give up", from the clock and an answer's status and headers

@pytest.fixture
def frozen(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(cfkv_clock, "monotonic", lambda: now[0])
    return now


def _policy(max_retries=2, deadline=10.0):
    policy = RetryPolicy(max_retries, deadline)
    policy.jitter = lambda span: 0.0
    return policy


@pytest.mark.parametrize("status, retried", [(429, True), (500, True), (502, True), (503, True), (504, True),
                                             (200, False), (400, False), (401, False), (404, False)])
def test_policy_retries_only_what_a_retry_can_mend(frozen, status, retried):
    assert (Attempts(_policy(), True).after_answer(status, {}) is not None) == retried


def test_policy_never_retries_a_call_that_is_not_idempotent(frozen):
    attempts = Attempts(_policy(), idempotent=False)
    assert attempts.after_answer(503, {}) is None and attempts.after_error() is None


def test_policy_gives_up_after_max_retries_and_says_how_long_to_wait_before_each(frozen):
    attempts = Attempts(_policy(max_retries=2), True)
    waits = []
    while (delay := attempts.after_answer(503, {"Retry-After": "1"} if waits else {})) is not None:
        waits.append(attempts.wait(delay))
    assert waits == [0.125, 1.0] and attempts.retries == 2


def test_policy_waits_no_longer_than_the_deadline_and_gives_up_past_it(frozen):
    attempts = Attempts(_policy(max_retries=5, deadline=3.0), True)
    assert attempts.window((5.0, 30.0)) == (103.0, (3.0, 3.0))  # the deadline runs from the first attempt
    assert attempts.after_answer(503, {"Retry-After": "2.5"}) == 2.5
    assert attempts.after_answer(503, {"Retry-After": "3"}) is None  # would end past the deadline
    frozen[0] += 2.9
    assert attempts.wait(0.5) == pytest.approx(0.1)  # cut at the deadline
    frozen[0] += 0.1
    assert attempts.window((5.0, 30.0)) is None  # no time left for another attempt


def test_policy_window_bounds_an_attempt_by_its_timeouts_and_the_deadline(frozen):
    attempts = Attempts(_policy(deadline=4.0), True)
    assert attempts.window((1.0, 2.0)) == (103.0, (1.0, 2.0))
    assert attempts.window((5.0, 30.0)) == (104.0, (4.0, 4.0))


def test_policy_backoff_doubles_to_its_cap_with_at_most_half_of_it_random():
    policy = RetryPolicy()
    policy.jitter = lambda span: span  # the most jitter can add
    assert [policy.backoff(n) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert 0.125 <= RetryPolicy().backoff(0) <= 0.25


def test_a_suite_that_patches_time_time_moves_the_packages_clock(monkeypatch):
    """clock.now reads time.time at each call: mock.patch("time.time") is how many suites fake 'now'."""
    fake_now = 1_600_000_000.0
    monkeypatch.setattr(time, "time", lambda: fake_now)
    assert limits.validate_expiry(expiration=fake_now + 120) == int(fake_now + 120)


# What Cloudflare reports, and what is counted

def test_low_budget_is_logged(scripted_client, scripted, caplog):
    scripted.get("/values/k", body=b"v", headers={"Ratelimit": '"default";r=12;t=30'})
    scripted_client.get("k")
    assert scripted_client.transport.budget[:2] == (12, 30)
    assert "12 calls left" in caplog.text


def test_a_low_budget_in_the_answer_right_after_a_healthy_one_is_logged(scripted_client, scripted, caplog):
    """Every answer's header is read for the warning, however soon after the last."""
    scripted.get("/values/k", body=b"v", headers={"Ratelimit": '"default";r=500;t=30'})
    scripted.get("/values/k", body=b"v", headers={"Ratelimit": '"default";r=12;t=30'})
    scripted_client.get("k")
    assert "calls left" not in caplog.text
    scripted_client.get("k")
    assert scripted_client.transport.budget[:2] == (12, 30)
    assert "12 calls left" in caplog.text


def test_a_low_budget_is_logged_under_a_frozen_clock(scripted_client, scripted, caplog, monkeypatch):
    monkeypatch.setattr(cfkv_clock, "now", lambda: float(NOW))
    for remaining in (500, 400, 99):
        scripted.get("/values/k", body=b"v", headers={"Ratelimit": f'"default";r={remaining};t=30'})
    for _ in range(3):
        scripted_client.get("k")
    assert "99 calls left" in caplog.text and scripted_client.transport.budget == (99, 30, NOW)


def test_a_ratelimit_header_that_cannot_be_read_leaves_the_last_budget(scripted_client, scripted):
    """An upstream (or a proxy) that sends an odd header does not blank the budget ``cfkv ping`` shows."""
    scripted.get("/values/k", body=b"v", headers={"Ratelimit": '"default";r=500;t=30'})
    scripted.get("/values/k", body=b"v", headers={"Ratelimit": "garbage"})
    scripted_client.get("k")
    scripted_client.get("k")
    assert scripted_client.transport.budget[:2] == (500, 30)


def test_repr_and_errors_never_show_the_token(closed_port, as_mode, slept):
    made = KVClient(ACCOUNT, NS, TOKEN, base_url=f"http://127.0.0.1:{closed_port}/client/v4", max_retries=0)
    client = as_mode(made)
    text = repr(made) + repr(made.transport) + repr(made.transport.policy)
    with pytest.raises(KVConnectionError) as info:
        client.get("k")
    text += str(info.value) + repr(info.value) + str(vars(made.transport))
    made.close()
    assert TOKEN not in text


def test_calls_are_counted_per_endpoint(scripted_client, scripted, slept):
    from django_cfkv.transport import calls

    before = calls.snapshot()
    scripted.get("/values/k", status=503, json=UNAVAILABLE)
    scripted.get("/values/k", body=b"v")
    scripted.delete("/values/k", json=envelope())
    scripted_client.get("k")
    scripted_client.delete("k")
    after = calls.snapshot()
    assert after.get("get", 0) - before.get("get", 0) == 2  # each attempt costs quota
    assert after.get("delete", 0) - before.get("delete", 0) == 1
    assert scripted_client.transport.calls.snapshot() == {"get": 2, "delete": 1}
