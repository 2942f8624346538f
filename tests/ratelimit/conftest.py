"""Fixtures of the rate-limiting tests: the test site on an empty store, and the fault matrix
(tests/support/faults.py)."""

import pytest
from django.test import override_settings

from django_cfkv.ratelimit import reset_limiter
from tests.support.faults import closed_port, emulator, fault, listener, slept  # noqa: F401 (fixtures)

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_cfkv.middleware.RateLimitMiddleware",
]


@pytest.fixture
def site(tmp_path):
    """tests/ratelimit/urls.py behind RateLimitMiddleware, counting in its own empty LocalKV."""
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           ROOT_URLCONF="tests.ratelimit.urls", MIDDLEWARE=MIDDLEWARE):
        yield
        reset_limiter()  # what it counted is written to this test's store, not the next one's

