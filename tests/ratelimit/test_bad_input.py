"""Bad input at the rate limiter's front door, fuzzed with hypothesis: rate strings, rule configs and
spoofed client-address headers. Clear errors or safe defaults, never a 500.
"""

from unittest import mock

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from django_cfkv import clock
from django_cfkv import ratelimit as rl

# Rate strings and rule configs


@given(rate=st.one_of(st.text(max_size=20), st.from_regex(r"\s*-?\d{0,4}\s*/\s*\d{0,3}\s*[smhdx]?\s*"),
                      st.integers(), st.none(), st.binary(max_size=5), st.floats()))
@settings(max_examples=300, deadline=None)
def test_rate_strings_parse_or_fail_clearly(rate):
    try:
        limit, period = rl.parse_rate(rate)
    except ImproperlyConfigured as exc:
        assert "Invalid rate" in str(exc) and exc.hint
        return
    assert isinstance(limit, int) and limit >= 0 and isinstance(period, int) and period >= 1


anything = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats() | st.text(max_size=15),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
rule_strategy = st.one_of(anything, st.fixed_dictionaries({}, optional={
    "path": st.one_of(st.text(max_size=10), st.sampled_from(["^/login/$", "(", "[", "*", ".*"]), anything),
    "methods": st.one_of(st.lists(st.sampled_from(["GET", "POST", "get", 5, None])), st.text(max_size=5), anything),
    "rate": st.one_of(st.sampled_from(["3/m", "1/s", "0/m", "x"]), anything),
    "key": st.one_of(st.sampled_from(["ip", "user", "user_or_ip", "header:X-Api-Key", "get:q", "post:q", "param:q",
                                      "header:", "os.path.join", "no.such.module",
                                      "tests.ratelimit.urls.broken_key"]),
                     anything),
    "group": st.one_of(st.sampled_from(["g", "..", "a/b", "x" * 101, "é", ""]), anything),
}))
config_strategy = st.one_of(anything, st.fixed_dictionaries({"RULES": st.lists(rule_strategy, max_size=3)}, optional={
    name: st.one_of(anything, st.sampled_from([default, "cloudflare", ["cloudflare"], ["10.0.0.0/8", "x"], -1, 0,
                                               float("nan"), float("inf"), "CF-Connecting-IP", "no.such.View"]))
    for name, default in rl.DEFAULTS.items() if name not in ("RULES", "ALIAS", "CACHE", "VIEW")
} | {"VIEW": st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["no.such.View", "os.path.join"]))}))

# A VIEW that is not a string (a list, a number, a view function) is reported, never a 500.
BAD_VIEWS = [[], 5, {"view": "x"}, print]


@given(raw=config_strategy)
@settings(max_examples=150, deadline=None)
def test_any_rule_config_is_compiled_or_reported(raw):
    options, rules, problems = rl.compile_settings(raw)
    assert all(isinstance(p, ImproperlyConfigured) and str(p) for p in problems)
    assert all(isinstance(r, rl.Rule) for r in rules)


@given(raw=config_strategy, forwarded=st.text(max_size=40), peer=st.sampled_from(
    ["127.0.0.1", "173.245.48.10", "::1", "garbage"]))  # no address at all: test_identity.py (E118)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_middleware_never_answers_500_whatever_the_config(tmp_path, raw, forwarded, peer):
    with override_settings(ROOT_URLCONF="tests.ratelimit.urls",
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           CFKV_RATELIMIT=raw):
        try:
            client = Client(raise_request_exception=False)
            for path in ("/login/", "/limited/"):
                response = client.post(path, {"q": "x"}, REMOTE_ADDR=peer, HTTP_CF_CONNECTING_IP=forwarded,
                                       HTTP_X_FORWARDED_FOR=forwarded, HTTP_X_API_KEY=forwarded)
                assert response.status_code in (200, 429), response.status_code
        finally:
            rl.reset_limiter()


MID_MINUTE = 1_700_000_010.0  # 30 s into a minute
SPOOF_RULES = {"RULES": [{"path": r"^/login/$", "rate": "3/m", "key": "ip"}],
               "TRUSTED_PROXIES": ["cloudflare"], "PROXY_HEADER": "CF-Connecting-IP"}


@given(spoofed=st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=30)), min_size=6, max_size=6))
@example(spoofed=[f"198.51.100.{i}" for i in range(6)])  # a fresh, well-formed address for each request
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_spoofed_client_address_headers_do_not_reset_the_count(tmp_path_factory, spoofed):
    """An attacker not behind Cloudflare's edge cannot pick a fresh identity per request, whatever it sends in
    CF-Connecting-IP or X-Forwarded-For (the edge's own header from the edge: test_identity.py)."""
    path = tmp_path_factory.mktemp("spoof") / "kv.sqlite3"
    # The package's clock stands still mid-minute: on the real one the six requests could straddle the end of
    # the rule's one-minute window, and the count would start afresh for a reason that is not the headers.
    with mock.patch.object(clock, "now", lambda: MID_MINUTE), \
            override_settings(ROOT_URLCONF="tests.ratelimit.urls",
                              MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                              CFKV={"default": {"BACKEND": "local", "PATH": str(path)}}, CFKV_RATELIMIT=SPOOF_RULES):
        try:
            client = Client()
            codes = [client.get("/login/", REMOTE_ADDR="203.0.113.9", HTTP_CF_CONNECTING_IP=ip,
                                HTTP_X_FORWARDED_FOR=ip).status_code for ip in spoofed]
        finally:
            rl.reset_limiter()
    assert codes == [200, 200, 200, 429, 429, 429]


@pytest.mark.parametrize("view", BAD_VIEWS, ids=["list", "int", "dict", "callable"])
def test_a_view_option_that_is_not_a_string_is_reported_not_a_500(tmp_path, view):
    raw = {"RULES": [], "VIEW": view}
    problems = rl.compile_settings(raw)[2]
    assert any("VIEW" in str(p) for p in problems)
    with override_settings(ROOT_URLCONF="tests.ratelimit.urls",
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           CFKV_RATELIMIT=raw):
        try:
            assert Client(raise_request_exception=False).get("/limited/").status_code == 200
        finally:
            rl.reset_limiter()
