"""Fixtures of the session engine's tests: the engine on, a clock to move, an emulator namespace, users, a site."""

import time

import pytest
from django.contrib.auth import get_user_model

from django_cfkv import clock as cfkv_clock
from tests.support.faults import closed_port, emulator, fault, listener, seen_paths, slept  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def engine(settings):
    """This engine for cookie sessions; a fast password hasher (logins are not what these tests time)."""
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def clock(monkeypatch):
    """Move the package's clock forward: ``clock(61)``."""
    offset = [0.0]
    monkeypatch.setattr(cfkv_clock, "now", lambda: time.time() + offset[0])

    def advance(seconds):
        offset[0] += seconds

    return advance


@pytest.fixture
def emu(settings, cfkv_emulator):
    """Sessions in a fresh emulator namespace and API window, reached over HTTP without retries; faults
    cleared after. (A window other tests spent answers 429 with no call left, and the client then blocks
    every call for its Retry-After.)"""
    cfkv_emulator.reset_quota()
    settings.CFKV = {"default": cfkv_emulator.alias_settings(MAX_RETRIES=0)}
    yield cfkv_emulator
    cfkv_emulator.clear_faults()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("ann", "ann@example.com", "pw")


@pytest.fixture
def other(db):
    return get_user_model().objects.create_user("bob", "bob@example.com", "pw")


@pytest.fixture(params=["local", "emulator"])
def site(request, settings, tmp_path):
    """A site with cookie and bearer sessions on a fresh namespace: LocalKV, or the emulator over HTTP."""
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django_cfkv.bearer.BearerSessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    if request.param == "local":
        settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    else:
        settings.CFKV = {"default": request.getfixturevalue("cfkv_emulator").alias_settings(MAX_RETRIES=0)}
    return settings
