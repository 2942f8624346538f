"""The limiter (django_cfkv.ratelimit.limiter): a request's Usage against a rule, the FAIL_OPEN policy, and the
process-wide limiter that settings changes rebuild."""

import logging

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory, override_settings

from django_cfkv import clock
from django_cfkv import ratelimit as rl
from django_cfkv.exceptions import KVConnectionError
from django_cfkv.local import LocalKV


def test_limiter_usage_and_fail_policy(tmp_path, settings):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    clock = [1_700_000_010.0]
    limiter = rl.Limiter({"RULES": [{"rate": "2/m", "group": "g"}]}, clock=lambda: clock[0])
    rule = limiter.rules[0]
    first, second, third = (limiter.hit(rule, "ip:1.2.3.4") for _ in range(3))
    assert (first.count, first.remaining, first.limited, first.reset) == (1, 1, False, 30)
    assert (second.limited, third.limited, third.remaining) == (False, True, 0)
    clock[0] += 30  # the next window
    assert limiter.hit(rule, "ip:1.2.3.4").count == 1
    limiter.close()

    for fail_open in (True, False):  # a strict-mode cache that does not exist: a mistake FAIL_OPEN never hides
        limiter = rl.Limiter({"FAIL_OPEN": fail_open, "CACHE": "no-such-cache", "RULES": [{"rate": "2/m"}]})
        with pytest.raises(ImproperlyConfigured, match="no-such-cache"):
            limiter.hit(limiter.rules[0], "ip:1.2.3.4")


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_request_that_could_not_be_counted_is_decided_by_fail_open(fail_open):
    limiter = rl.Limiter({"FAIL_OPEN": fail_open, "RULES": [{"rate": "2/m"}]}, clock=lambda: 1_700_000_010.0)
    usage = limiter.unavailable(limiter.rules[0])
    assert (usage.count, usage.reset, usage.limited) == (0, 30, not fail_open)


def test_the_limiter_is_built_once_and_rebuilt_when_its_settings_change(tmp_path):
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           CFKV_RATELIMIT={"RULES": [{"rate": "2/m", "group": "first"}]}):
        limiter = rl.get_limiter()
        assert rl.get_limiter() is limiter and [r.name for r in limiter.rules] == ["first"]
        with override_settings(CFKV_RATELIMIT={"RULES": [{"rate": "2/m", "group": "second"}]}):
            assert [r.name for r in rl.get_limiter().rules] == ["second"]
        assert rl.get_limiter() is not limiter and [r.name for r in rl.get_limiter().rules] == ["first"]


@pytest.mark.usefixtures("site")
def test_the_limiter_counts_where_the_settings_say_after_they_change(tmp_path):
    rules = {"RULES": [{"path": r"^/login/$", "rate": "2/h", "group": "login"}]}
    elsewhere = tmp_path / "elsewhere.sqlite3"
    client = Client()
    with override_settings(CFKV_RATELIMIT=rules):
        assert [client.post("/login/").status_code for _ in range(3)] == [200, 200, 429]
        with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(elsewhere)}}):
            assert [client.post("/login/").status_code for _ in range(3)] == [200, 200, 429]
        assert [info.metadata["count"] for info in LocalKV(elsewhere).iter_keys(prefix="rl:login:")] == [3]
        strict = {"limits": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "limits"}}
        with override_settings(CFKV_RATELIMIT={**rules, "CACHE": "limits"}, CACHES=strict):
            assert client.post("/login/").status_code == 200
            with override_settings(CACHES={"limits": {**strict["limits"], "LOCATION": "other-limits"}}):
                assert client.post("/login/").status_code == 200  # a fresh cache: a fresh count


@pytest.mark.usefixtures("site")
def test_a_rule_that_does_not_apply_to_a_request_leaves_it_uncounted():
    rule = rl.compile_rule({"rate": "1/h", "key": "user"})
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    assert [rl.count_request(request, [rule]) for _ in range(3)] == [[], [], []]


@pytest.mark.usefixtures("site")
def test_failures_to_count_are_logged_once_per_30_s_with_a_traceback_only_for_a_bug(caplog, monkeypatch):
    offset = [0.0]
    real = clock.monotonic
    monkeypatch.setattr(clock, "monotonic", lambda: real() + offset[0])
    rule = {"path": r"^/login/$", "rate": "3/h", "key": "tests.ratelimit.urls.broken_key"}
    client = Client()
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}), caplog.at_level(logging.ERROR):
        assert [client.post("/login/").status_code for _ in range(3)] == [200] * 3
        offset[0] += rl.LOG_EVERY
        client.post("/login/")
    failed = [r for r in caplog.records if r.getMessage().startswith("Rate limiting failed")]
    assert len(failed) == 2 and all(r.exc_info for r in failed)  # a bug in a key function: its traceback
    caplog.clear()
    limiter = rl.Limiter({"RULES": [{"rate": "2/m"}]})
    try:
        raise KVConnectionError("KV cannot be reached")
    except KVConnectionError as exc:
        limiter.log_failure(exc)
    [record] = caplog.records
    assert not record.exc_info  # KV failing is no bug: one line, no traceback


@pytest.mark.usefixtures("site")
def test_a_clients_malformed_body_reaches_the_failure_log_as_one_line_of_escapes(caplog):
    """A rule keyed on a POST field reads request.POST, and Django's error for a malformed multipart
    body quotes the client's Content-Type: in the log it shows as escapes, never as a terminal
    sequence or a second log line."""
    rule = {"path": r"^/login/$", "rate": "3/h", "key": "post:username"}
    forged = "multipart/form-data; boundary=\x1b]52;c;cHduZWQ=\x07\x1b[2K\r\n\x9b31m\u202eforged"
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}), caplog.at_level(logging.ERROR):
        assert Client().post("/login/", "x", content_type=forged).status_code == 200
    [record] = [r for r in caplog.records if r.getMessage().startswith("Rate limiting failed")]
    message = record.getMessage()
    assert message.isprintable(), message
    assert "\\x1b]52;c;cHduZWQ=\\x07\\x1b[2K\\r\\n\\x9b31m\\u202eforged" in message
