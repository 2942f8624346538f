"""login() and password changes inside a bearer request: the token the client holds stays valid."""

import json
import time
import uuid

import pytest
from django.contrib.auth import get_user_model, login, update_session_auth_hash
from django.http import JsonResponse
from django.test import Client
from django.urls import path

from django_cfkv import get_kv
from django_cfkv.sessions import SessionStore, issue_token

from .helpers import auth

BACKEND = "django.contrib.auth.backends.ModelBackend"


def do_login(request, pk):
    login(request, get_user_model().objects.get(pk=pk), backend=BACKEND)
    return JsonResponse({"user": pk})


def change_password(request):
    request.user.set_password("new")
    request.user.save()
    update_session_auth_hash(request, request.user)  # cycles the session key
    return JsonResponse({"changed": True})


def whoami(request):
    return JsonResponse({"user": request.user.pk})


urlpatterns = [path("login/<int:pk>/", do_login), path("password/", change_password), path("whoami/", whoami)]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def bearer_settings(settings):
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django_cfkv.bearer.BearerSessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]



def test_password_change_keeps_the_token_and_ends_the_others(user):
    token, other = issue_token(None, user), issue_token(None, user)
    client = Client()
    assert client.get("/password/", **auth(token)).status_code == 200
    assert client.get("/whoami/", **auth(token)).json() == {"user": user.pk}
    assert client.get("/whoami/", **auth(other)).json() == {"user": None}  # Django's hash check


def test_login_on_an_anonymous_worker_session_keeps_its_token(settings, user):
    settings.SESSION_CFKV_FORMAT = "json"
    token, now = str(uuid.uuid4()), time.time() * 1000
    get_kv().put(SessionStore.kv_key(token), json.dumps({"userId": None, "email": "x@example.com",
                                                   "createdAt": now, "expiresAt": now + 3_600_000}))
    client = Client()
    assert client.get(f"/login/{user.pk}/", **auth(token)).status_code == 200
    assert client.get("/whoami/", **auth(token)).json() == {"user": user.pk}
    value = json.loads(get_kv().get(SessionStore.kv_key(token)))
    assert value["userId"] == str(user.pk) and "email" not in value  # not carried to the new user


def test_login_as_another_user_ends_the_token(user):
    other = get_user_model().objects.create_user("bob", "bob@example.com", "pw")
    token = issue_token(None, user)
    client = Client()
    assert client.get(f"/login/{other.pk}/", **auth(token)).json() == {"user": other.pk}
    assert client.get("/whoami/", **auth(token)).status_code == 401  # flushed: issue_token() for a new one
