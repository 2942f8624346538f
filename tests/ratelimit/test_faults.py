"""The fault matrix on the rate limiter: under each of Cloudflare's documented failures
(tests/support/faults.py) the middleware and the decorator follow FAIL_OPEN, log, and never answer 500;
a refused token or a namespace that does not exist is a mistake to fix, raised whatever FAIL_OPEN says.
Each runs in a sync stack and in an async one (KV awaited natively, an async view for the decorator).
"""

import logging

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from django_cfkv import clock
from django_cfkv import ratelimit as rl
from django_cfkv.exceptions import KVAuthError, KVNotFoundError
from tests.support.faults import FAULTS, warned

LIMITER_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_cfkv.middleware.RateLimitMiddleware",
]


MISTAKES = ["401", "403", "missing_namespace"]  # a refused token, a namespace that does not exist
DECORATED = {"sync": "/decorated/", "async": "/decorated-async/"}


class AsyncStack:
    """Django's AsyncClient with the test client's blocking face: each request awaited in its own loop."""

    def __init__(self):
        self.client = AsyncClient()

    def get(self, path):
        return async_to_sync(self.client.get)(path)

    def post(self, path):
        return async_to_sync(self.client.post)(path)


def client_for(stack):
    return Client() if stack == "sync" else AsyncStack()


@pytest.mark.parametrize("stack", ["sync", "async"])
@pytest.mark.parametrize("fail_open", [True, False])
@pytest.mark.parametrize("fault", [name for name in FAULTS if name not in MISTAKES], indirect=True)
def test_limiter_under_fault_follows_fail_open_and_never_500s(fault, settings, caplog, fail_open, stack,
                                                             monkeypatch):
    # The package's clock stands still mid-minute: on the real one the eight requests could straddle the end of
    # the rule's one-minute window, and this process's own count would start afresh.
    now = clock.now()
    monkeypatch.setattr(clock, "now", lambda: now - now % 60 + 30)
    settings.ROOT_URLCONF = "tests.ratelimit.urls"
    settings.MIDDLEWARE = LIMITER_MIDDLEWARE
    settings.CFKV_RATELIMIT = {"ALIAS": "faulty", "FAIL_OPEN": fail_open, "RULES": [
        {"path": r"^/login/$", "methods": ["POST"], "rate": "3/m", "key": "ip"}]}
    caplog.set_level(logging.ERROR)
    try:
        client = client_for(stack)
        codes = [client.post("/login/").status_code for _ in range(5)]
        decorated = [client.get(DECORATED[stack]).status_code for _ in range(3)]
    finally:
        rl.reset_limiter()
    if fail_open:
        # Allowed while KV fails, but this process's own count is still enforced.
        assert codes == [200, 200, 200, 429, 429]
        assert decorated == [200, 200, 429]
    else:
        assert codes == [429] * 5 and decorated == [429] * 3
    assert warned(caplog, "django_cfkv.ratelimit")


@pytest.mark.parametrize("stack", ["sync", "async"])
@pytest.mark.parametrize("fail_open", [True, False])
@pytest.mark.parametrize("fault", MISTAKES, indirect=True)
def test_a_refused_token_or_missing_namespace_is_an_error_not_a_pass(fault, settings, fail_open, stack):
    settings.ROOT_URLCONF = "tests.ratelimit.urls"
    settings.MIDDLEWARE = LIMITER_MIDDLEWARE
    settings.CFKV_RATELIMIT = {"ALIAS": "faulty", "FAIL_OPEN": fail_open, "RULES": [
        {"path": r"^/login/$", "methods": ["POST"], "rate": "3/m", "key": "ip"}]}
    expected = KVNotFoundError if fault == "missing_namespace" else KVAuthError
    try:
        client = client_for(stack)
        for _ in range(2):  # every request meets it, not only the first of a window
            with pytest.raises(expected):
                client.post("/login/")
        with pytest.raises(expected):
            client.get(DECORATED[stack])
        assert client.get("/open/").status_code == 200  # a request no rule counts is untouched
    finally:
        rl.reset_limiter()
