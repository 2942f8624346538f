"""Bad input at the session engine's front door, fuzzed with hypothesis: hostile session cookies.

Never a 500, and a session cookie never makes a request reach any KV path but
``.../values/session%3A<a key the engine made>``.
"""

import re
from http.cookies import SimpleCookie

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_cfkv.sessions import SessionStore, hashed_id, is_valid_key
from django_cfkv.testing import assert_kv_calls

from .helpers import spent

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
    settings.ROOT_URLCONF = "tests.support.urls"
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


# Cookies no session key can be (the fuzz above draws from them); each is checked whole here.
FORGED = [*HOSTILE_COOKIES, "../../x/yyyyyy", "abc/def/ghi", "ABCDEFGHIJKL", "a" * 41, "short", "x%2fyyyyyyyy",
          "aaaaaaaa\n", "aaaa aaaa", "123e4567-e89b-12d3-a456-426614174000", "session:aaaaaaaaa", "../x", "a/b",
          "x" * 41, "UPPERCASEKEY1234"]


def browser_cookie(value):
    """Return the Cookie header a browser sends for ``sessionid=value`` (quoted where it must be), as a WSGI
    server hands it over: UTF-8 bytes as latin-1 text (PEP 3333)."""
    jar = SimpleCookie()
    jar["sessionid"] = value
    return {"HTTP_COOKIE": jar["sessionid"].OutputString().encode().decode("latin-1")}


@pytest.mark.urls("tests.sessions.urls")
@pytest.mark.parametrize("cookie", FORGED)
def test_forged_cookie_never_reaches_kv(emu, cfkv_calls, cookie):
    assert not is_valid_key(cookie)
    client, header = Client(), browser_cookie(cookie)
    assert client.get("/read/", **header).json() == {"n": None}
    assert spent(cfkv_calls) == {}
    response = client.get("/bump/", **header)
    assert response.cookies["sessionid"].value != cookie
    assert spent(cfkv_calls) == {"put": 1}  # the new session's, nothing for the forged key


@pytest.mark.parametrize("cookie", FORGED)
def test_invalid_session_keys_cause_no_io(session_site, cookie):
    session_site.clear()
    with assert_kv_calls(0):
        store = SessionStore(cookie)
        assert store.session_key is None
        assert store.load() == {} and dict(store.items()) == {}
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
