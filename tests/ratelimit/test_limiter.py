"""The limiter (django_cfkv.ratelimit.limiter): a request's Usage against a rule, the FAIL_OPEN policy, and the
process-wide limiter that settings changes rebuild."""

import pytest
from django.test import override_settings

from django_cfkv import ratelimit as rl


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

    for fail_open in (True, False):  # a strict-mode cache that cannot be built: the store fails on every hit
        limiter = rl.Limiter({"FAIL_OPEN": fail_open, "CACHE": "no-such-cache", "RULES": [{"rate": "2/m"}]})
        assert limiter.hit(limiter.rules[0], "ip:1.2.3.4").limited is (not fail_open)


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
