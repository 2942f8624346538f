"""BearerSessionMiddleware follows SESSION_ENGINE: a project's subclass of the KV store, or a clear error."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from django_cfkv import get_kv, sessions
from django_cfkv.bearer import BearerSessionMiddleware
from django_cfkv.sessions import issue_token, revoke_token

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]


class SessionStore(sessions.SessionStore):
    """This module is the engine: ``SESSION_ENGINE = "tests.sessions.test_bearer_engine"``."""

    @classmethod
    def key_salt_value(cls):
        return "tests.api-tokens"

    @classmethod
    def key_prefix(cls):
        return "api:"


@pytest.fixture(autouse=True)
def bearer_settings(settings):
    settings.SESSION_ENGINE = __name__
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django_cfkv.bearer.BearerSessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]


def test_a_subclassed_engine_with_its_own_prefix_and_salt(user):
    token = issue_token(None, user)
    kv = get_kv()
    key = "api:" + sessions.hashed_id(token)
    assert kv.get(key) is not None and not any(token in info.name for info in kv.iter_keys())
    header = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert Client().get("/whoami/", **header).json() == {"user": user.pk, "n": None, "bearer": True}
    revoke_token(token)
    assert kv.get(key) is None
    assert Client().get("/whoami/", **header).status_code == 401


@pytest.mark.parametrize("engine", ["django.contrib.sessions.backends.signed_cookies",
                                    "django.contrib.sessions.backends.db"])
def test_an_engine_outside_workers_kv_is_refused_at_startup(settings, engine):
    settings.SESSION_ENGINE = engine
    with pytest.raises(ImproperlyConfigured, match="SESSION_ENGINE is .*django_cfkv.sessions"):
        BearerSessionMiddleware(lambda request: None)
