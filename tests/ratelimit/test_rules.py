"""Rates and rules (django_cfkv.ratelimit.rules): what a rate means, which requests a rule counts, and the
check id of every mistake. No requests."""

import subprocess
import sys

import pytest

from django_cfkv import ratelimit as rl

# Rates


@pytest.mark.parametrize("rate, expected", [
    ("5/m", (5, 60)), ("100/10m", (100, 600)), ("1000/h", (1000, 3600)), ("10/s", (10, 1)),
    ("50000/d", (50000, 86400)), (" 7 / 2h ", (7, 7200)), ("1/1s", (1, 1)), (" 1 / s ", (1, 1)),
    # django-ratelimit's: no unit is seconds, a limit of 0 refuses every request, a (count, seconds) tuple
    ("100/10", (100, 10)), ("0/m", (0, 60)), ((3, 60), (3, 60)), ((0, 1), (0, 1)),
])
def test_parse_rate(rate, expected):
    assert rl.parse_rate(rate) == expected


@pytest.mark.parametrize("rate", [
    "", "5", "5/", "/m", "5/x", "5/y", "5/0m", "5/0", "-1/m", "5/m/s", "five/m", "1e3/m", None, 5, "5/05m",
    "5/minute", "1/\u0ce6d", "\u0665/m", "5/\uff11m",  # digits of other scripts: int() reads them
    (5, 0), (-1, 60), (True, 60), ("5", 60), (5, 60.0), (5, 60, 1), [5, 60],
])
def test_bad_rates_are_refused_with_the_check_id_and_a_hint(rate):
    with pytest.raises(rl.ConfigProblem, match="Invalid rate") as info:
        rl.parse_rate(rate)
    assert info.value.id == "django_cfkv.E104"
    assert "5/m" in info.value.hint


# Rules and keys


def test_compile_rule():
    rule = rl.compile_rule({"path": r"^/login/$", "methods": ["post"], "rate": "5/m", "key": "ip"})
    assert (rule.limit, rule.period, rule.key, rule.methods) == (5, 60, "ip", frozenset({"POST"}))
    assert rule.matches("/login/", "POST") and not rule.matches("/login/", "GET")
    assert not rule.matches("/login/x", "POST")
    assert rule.name.startswith("r") and rule.name == rl.compile_rule(
        {"path": r"^/login/$", "methods": ["post"], "rate": "5/m", "key": "ip"}).name
    assert rl.compile_rule({"rate": "1/s", "group": "api"}).name == "api"
    assert rl.compile_rule({"rate": "1/s"}).matches("/anything", "DELETE")
    assert rule.matches("/login/", "post")  # a method as any caller spells it
    # The path is searched, not matched from the start: "login/$" is every path ending so.
    assert rl.compile_rule({"rate": "1/s", "path": r"login/$"}).matches("/accounts/login/", "GET")


def test_rules_that_differ_only_in_their_methods_count_apart():
    get = rl.compile_rule({"path": r"^/x/", "rate": "5/m", "methods": ["GET"]})
    post = rl.compile_rule({"path": r"^/x/", "rate": "5/m", "methods": ["POST"]})
    assert get.name != post.name


@pytest.mark.parametrize("key, kind, arg", [
    ("ip", "ip", None), ("user", "user", None), ("user_or_ip", "user_or_ip", None),
    ("header:X-Api-Key", "header", "X-Api-Key"), ("get:q", "get", "q"), ("post:email", "post", "email"),
    ("post: email ", "post", "email"),
    ("tests.ratelimit.urls.api_key", "callable", None),
])
def test_compile_key(key, kind, arg):
    got_kind, got_arg = rl.compile_key(key)
    assert got_kind == kind
    if kind == "callable":
        assert callable(got_arg)
    else:
        assert got_arg == arg


def test_policy_name_of_a_callable_key_is_the_same_in_every_process():
    from tests.ratelimit.urls import api_key

    spec = {"path": r"^/api/", "rate": "5/m"}
    name = rl.compile_rule({**spec, "key": api_key}).name
    # The callable and its dotted path name one policy, whatever the function's address.
    assert name == rl.compile_rule({**spec, "key": "tests.ratelimit.urls.api_key"}).name
    code = ("from django_cfkv.ratelimit import compile_rule; from tests.ratelimit.urls import api_key; "
            "print(compile_rule({'path': r'^/api/', 'rate': '5/m', 'key': api_key}).name)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == name


@pytest.mark.parametrize("spec, check_id", [
    ("not a dict", "django_cfkv.E102"),
    ({"path": "^/x/$"}, "django_cfkv.E102"),
    ({"rate": "5/m", "paht": "^/x/$"}, "django_cfkv.E102"),
    ({"rate": "5/mm"}, "django_cfkv.E104"),
    ({"rate": "5/m", "path": "(unclosed"}, "django_cfkv.E103"),
    ({"rate": "5/m", "key": "cookie:x"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "header:"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "post:"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "param:email"}, "django_cfkv.E105"),
    ({"rate": "5/m", "key": "no.such.module.func"}, "django_cfkv.E105"),
    ({"rate": "5/m", "methods": [1]}, "django_cfkv.E106"),
    ({"rate": "5/m", "group": "has space"}, "django_cfkv.E107"),
    ({"rate": "5/m", "group": "a:b"}, "django_cfkv.E107"),
])
def test_bad_rules_name_their_check_id(spec, check_id):
    with pytest.raises(rl.ConfigProblem) as info:
        rl.compile_rule(spec, 0)
    assert info.value.id == check_id


async def _async_key(group, request):
    return "never awaited"


class _AsyncKey:
    async def __call__(self, group, request):
        return "never awaited"


def test_an_async_key_is_refused_with_the_check_id_and_a_hint():
    """Keys are plain calls: an async one would count every request under its coroutine's text."""
    for key in (_async_key, "tests.ratelimit.test_rules._async_key", _AsyncKey()):
        with pytest.raises(rl.ConfigProblem, match="async function") as info:
            rl.compile_rule({"path": r"^/api/", "rate": "5/m", "key": key})
        assert info.value.id == "django_cfkv.E105" and "plain def" in info.value.hint
