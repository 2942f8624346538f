"""From the attacker's side: a client cannot reset or dodge its own count.

A brute-forcer controls the query string, the form body, header values and
how many other identities it sends; none of it may give it a fresh count for
the account it is guessing at, nor lower a count already stored.
"""

import secrets

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from django_cfkv import ratelimit as rl

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_cfkv.middleware.RateLimitMiddleware",
]
SIGN_IN_RULE = {"path": r"^/sign-in/$", "methods": ["POST"], "rate": "3/h", "key": "post:username"}


@pytest.fixture(autouse=True)
def fresh_store(tmp_path):
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           ROOT_URLCONF="tests.ratelimit_urls", MIDDLEWARE=MIDDLEWARE,
                           CFKV_RATELIMIT={"RULES": [SIGN_IN_RULE]},
                           PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):  # fast guesses
        yield
        rl.reset_limiter()


@pytest.fixture
def victim(db):
    return User.objects.create_user("victim", password="correct horse battery staple")


def guess(client, path, username, password="wrong", query=None):
    """POST one password guess for ``username``, with ``query`` appended to the URL."""
    url = f"{path}?{query}" if query else path
    return client.post(url, {"username": username, "password": password})


@pytest.mark.parametrize("path", ["/sign-in/", "/decorated-sign-in/"])
def test_a_random_query_string_value_per_post_does_not_dodge_a_post_key(victim, path):
    client = Client()
    responses = [guess(client, path, "victim", query=f"username={secrets.token_hex(8)}") for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429, 429]
    assert responses[0].content == b"wrong username or password"


@pytest.mark.parametrize("path", ["/sign-in/", "/decorated-sign-in/"])
def test_spellings_of_one_username_share_its_count(victim, path):
    # Django's AuthenticationForm strips the username and NFKC-normalizes it, so each of these
    # signs in as "victim"; case differs only for backends that ignore it (email logins, iexact).
    spellings = ["victim", " victim", "victim\t", "ｖｉｃｔｉｍ", "Victim", "VICTIM "]
    client = Client()
    assert [guess(client, path, name).status_code for name in spellings] == [200, 200, 200, 429, 429, 429]


def test_the_spellings_sign_in_as_the_same_user(victim):
    with override_settings(CFKV_RATELIMIT={}):
        for name in ("victim", " victim", "victim\t", "ｖｉｃｔｉｍ"):
            assert guess(Client(), "/sign-in/", name, "correct horse battery staple").content == b"welcome"


def test_other_usernames_keep_their_own_counts(victim):
    client = Client()
    assert [guess(client, "/sign-in/", "victim").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert guess(client, "/sign-in/", "someone-else").status_code == 200


def test_spellings_of_one_bearer_token_share_its_count():
    # The scheme is case-insensitive (RFC 9110) and views split the header on whitespace.
    rule = {"path": r"^/api/items/$", "rate": "3/h", "key": "header:Authorization"}
    client = Client()
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}):
        codes = [client.get("/api/items/", HTTP_AUTHORIZATION=value).status_code
                 for value in ("Bearer tok3n", "bearer tok3n", "Bearer  tok3n", " BEARER tok3n", "Bearer\ttok3n")]
    assert codes == [200, 200, 200, 429, 429]
