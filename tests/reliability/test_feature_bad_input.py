"""Bad input at the features' front doors, fuzzed with hypothesis: session
cookies, rate strings, rule configs and spoofed client-address headers.

Clear errors or safe defaults, never a 500, and a session cookie never makes
a request reach any KV path but ``.../values/session%3A<a key the engine made>``.
"""

import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_cfkv import ratelimit as rl
from django_cfkv.sessions import SessionStore, hashed_id, is_valid_key

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

HOSTILE_COOKIES = [
    "/", "..", "../../keys", "%2F", "%2e%2e%2fkeys", "a/b" * 10, "\x00", "abc\x00defghijk", "k" * 10_000,
    "é" * 40, "🍪" * 10, "session:abc", "..%2F..%2Fbulk", "abcdefgh/../../../keys", "abcdefgh%2F..",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "abcdefghijklmnopqrstuvwxyz0123456789abcdefghij", "", " ", "'\"<>",
    "abcd", "12345678-1234-1234-1234-123456789abc",
]
cookie_strategy = st.one_of(
    st.sampled_from(HOSTILE_COOKIES),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=";,"), max_size=60),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/.%", min_size=8, max_size=40),
)

SESSION_MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]


@pytest.fixture
def session_site(settings, cfkv_emulator, seen_paths):
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    settings.ROOT_URLCONF = "tests.reliability.urls"
    settings.MIDDLEWARE = SESSION_MIDDLEWARE
    settings.CFKV = {"default": cfkv_emulator.alias_settings(MAX_RETRIES=0)}
    return seen_paths


def _session_path_key(path):
    """Return the session key name a value path names (hashed), or fail if it names anything else."""
    match = re.fullmatch(r"/client/v4/accounts/[0-9a-f]{32}/storage/kv/namespaces/[0-9a-f]{32}"
                         r"/values/session%3A([a-z0-9]+)", path)
    assert match, f"a session request reached {path!r}"
    return match.group(1)


@FUZZ
@given(cookie=cookie_strategy)
def test_hostile_session_cookie_reaches_no_other_path_and_never_500s(session_site, cookie):
    session_site.clear()
    client = Client()
    # A WSGI server hands header bytes over as latin-1 text (PEP 3333).
    header = f"sessionid={cookie}".encode().decode("latin-1")
    response = client.get("/session/", HTTP_COOKIE=header)
    assert response.status_code == 200
    new_key = response.cookies["sessionid"].value
    assert is_valid_key(new_key)
    if not is_valid_key(cookie):
        assert new_key != cookie
    keys = {_session_path_key(path) for _, path in session_site}
    assert keys <= {hashed_id(new_key), hashed_id(cookie)}
    if not is_valid_key(cookie):
        # No I/O for the forged key: one PUT for the new session, nothing else.
        assert [m for m, _ in session_site] == ["PUT"] and keys == {hashed_id(new_key)}
    # The new session works.
    assert client.get("/session/").content == b"2"


@pytest.mark.parametrize("cookie", HOSTILE_COOKIES)
def test_invalid_session_keys_cause_no_io(session_site, cookie):
    session_site.clear()
    if is_valid_key(cookie):
        pytest.skip("a well-formed key: covered by the fuzz test")  # keeps the parameter list one list
    store = SessionStore(cookie)
    assert store.session_key is None
    assert dict(store.items()) == {}
    assert store.exists(cookie) is False
    store.delete(cookie)
    assert session_site == []


def test_forged_but_well_formed_cookie_is_not_adopted(session_site):
    """Session fixation: a key the attacker picked never becomes the victim's session key."""
    forged = "attackerchosenkey0123456789abcde"
    client = Client()
    response = client.get("/session/", HTTP_COOKIE=f"sessionid={forged}")
    assert response.status_code == 200 and response.cookies["sessionid"].value != forged
    assert SessionStore(forged).load() == {}


def test_tampered_signed_session_value_is_an_empty_session(session_site, cfkv_emulator):
    client = Client()
    client.get("/session/")
    key = client.cookies["sessionid"].value
    kv = cfkv_emulator.client(namespace_id=None)
    # Someone with write access to the namespace but not SECRET_KEY rewrites the value.
    from django_cfkv import get_kv

    get_kv().put(SessionStore.kv_key(key), '{"data": {"_auth_user_id": "1"}, "expiresAt": 99999999999999}')
    assert SessionStore(key).load() == {}
    kv.close()


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
    assert isinstance(limit, int) and limit >= 1 and isinstance(period, int) and period >= 1


@pytest.mark.parametrize("rate, expected", [("5/m", (5, 60)), ("100/10m", (100, 600)), (" 1 / s ", (1, 1)),
                                            ("50000/d", (50000, 86400))])
def test_rate_examples(rate, expected):
    assert rl.parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["0/m", "5/0m", "5/", "/m", "5/y", "-1/m", "5/m/s", "1e3/m", "", None, 5])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ImproperlyConfigured, match="Invalid rate"):
        rl.parse_rate(rate)


anything = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats() | st.text(max_size=15),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
rule_strategy = st.one_of(anything, st.fixed_dictionaries({}, optional={
    "path": st.one_of(st.text(max_size=10), st.sampled_from(["^/login/$", "(", "[", "*", ".*"]), anything),
    "methods": st.one_of(st.lists(st.sampled_from(["GET", "POST", "get", 5, None])), st.text(max_size=5), anything),
    "rate": st.one_of(st.sampled_from(["3/m", "1/s", "0/m", "x"]), anything),
    "key": st.one_of(st.sampled_from(["ip", "user", "user_or_ip", "header:X-Api-Key", "get:q", "post:q", "param:q",
                                      "header:", "os.path.join", "no.such.module",
                                      "tests.ratelimit_urls.broken_key"]),
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
    ["127.0.0.1", "173.245.48.10", "::1", "garbage", ""]))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_middleware_never_answers_500_whatever_the_config(tmp_path, raw, forwarded, peer):
    with override_settings(ROOT_URLCONF="tests.reliability.urls",
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


SPOOF_RULES = {"RULES": [{"path": r"^/login/$", "rate": "3/m", "key": "ip"}],
               "TRUSTED_PROXIES": ["cloudflare"], "PROXY_HEADER": "CF-Connecting-IP"}


@given(spoofed=st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=30)), min_size=6, max_size=6))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_spoofed_client_address_headers_do_not_reset_the_count(tmp_path_factory, spoofed):
    """An attacker not behind Cloudflare's edge cannot pick a fresh identity per request."""
    path = tmp_path_factory.mktemp("spoof") / "kv.sqlite3"
    with override_settings(ROOT_URLCONF="tests.reliability.urls",
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV={"default": {"BACKEND": "local", "PATH": str(path)}}, CFKV_RATELIMIT=SPOOF_RULES):
        try:
            client = Client()
            codes = [client.get("/login/", REMOTE_ADDR="203.0.113.9", HTTP_CF_CONNECTING_IP=ip,
                                HTTP_X_FORWARDED_FOR=ip).status_code for ip in spoofed]
        finally:
            rl.reset_limiter()
    assert codes == [200, 200, 200, 429, 429, 429]


def test_behind_cloudflare_the_edge_header_names_the_client(tmp_path):
    with override_settings(ROOT_URLCONF="tests.reliability.urls",
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           CFKV_RATELIMIT=SPOOF_RULES):
        try:
            client = Client()
            codes = [client.get("/login/", REMOTE_ADDR="173.245.48.10", HTTP_CF_CONNECTING_IP=f"198.51.100.{i % 2}"
                                ).status_code for i in range(8)]
        finally:
            rl.reset_limiter()
    assert codes == [200] * 6 + [429] * 2  # two clients, three each


@pytest.mark.parametrize("view", BAD_VIEWS, ids=["list", "int", "dict", "callable"])
def test_a_view_option_that_is_not_a_string_is_reported_not_a_500(tmp_path, view):
    raw = {"RULES": [], "VIEW": view}
    problems = rl.compile_settings(raw)[2]
    assert any("VIEW" in str(p) for p in problems)
    with override_settings(ROOT_URLCONF="tests.reliability.urls",
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           CFKV_RATELIMIT=raw):
        try:
            assert Client(raise_request_exception=False).get("/limited/").status_code == 200
        finally:
            rl.reset_limiter()
