"""Views for the session and bearer-token tests (``pytest.mark.urls("tests.sessions.urls")``)."""

import asyncio

from django.contrib.auth import get_user_model, login, logout, update_session_auth_hash
from django.db import transaction
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.http import require_POST

from django_cfkv import aget_kv
from django_cfkv.sessions import issue_token, revoke_other_sessions, revoke_token
from django_cfkv.sessions.views import AsyncUserSessionsView
from django_cfkv.testing import get_emulator

BACKEND = "django.contrib.auth.backends.ModelBackend"


def whoami(request):
    user = request.user
    return JsonResponse({
        "user": user.pk if user.is_authenticated else None,
        "n": request.session.get("n"),
        "bearer": getattr(request, "session_from_bearer", False),
    })


async def awhoami(request):
    user = await request.auser()
    return JsonResponse({
        "user": user.pk if user.is_authenticated else None,
        "n": await request.session.aget("n"),
        "bearer": getattr(request, "session_from_bearer", False),
    })


async def abump(request):
    n = await request.session.aget("n", 0) + 1
    await request.session.aset("n", n)
    return JsonResponse({"n": n})


async def agathered(request):
    """Await the session and two KV reads at once (asyncio.gather): one round trip, not three."""
    kv = await aget_kv()
    n, a, b = await asyncio.gather(request.session.aget("n"), kv.aget("page:a"), kv.aget("page:b"))
    return JsonResponse({"n": n, "a": a is not None, "b": b is not None})


def read(request):
    return JsonResponse({"n": request.session.get("n")})


def bump(request):
    request.session["n"] = request.session.get("n", 0) + 1
    return JsonResponse({"n": request.session["n"]})


@require_POST
def post_bump(request):
    return bump(request)


def do_login(request, pk):
    login(request, get_user_model().objects.get(pk=pk), backend=BACKEND)
    return JsonResponse({"user": pk})


def do_logout(request):
    logout(request)
    return JsonResponse({"user": None})


def token(request, pk):
    max_age = request.GET.get("max_age")
    user = get_user_model().objects.get(pk=pk)
    value = issue_token(request, user, max_age=int(max_age) if max_age else None, backend=BACKEND)
    return JsonResponse({"token": value})


def revoke(request, value):
    revoke_token(value)
    return JsonResponse({"revoked": True})


def revoke_own(request):
    request.session.get("n")
    revoke_token(request.headers["Authorization"].split()[1])
    return JsonResponse({"revoked": True})


def delete_then_write(request):
    request.session.get("n")
    request.session.delete()  # gone from KV, as if logged out in another request
    request.session["n"] = 99
    return JsonResponse({"n": 99})


def read_then_kv_refuses(request):
    """Read the session (change it with ``?change=1``), then have the test emulator answer 429 to every call:
    the session's save at the end of this request is refused as Cloudflare refuses a spent budget."""
    response = bump(request) if request.GET.get("change") else read(request)
    get_emulator().set_faults(rate_429=1.0, retry_after=1)
    return response


def change_email(request):
    """Change the signed-in user's email (SESSION_CFKV_USER_FIELD in those tests), and note it in the session."""
    request.user.email = request.GET["to"]
    request.user.save()
    request.session["email_changed"] = True
    return JsonResponse({"user": request.user.pk})


def change_password(request):
    """Set a new password and keep this session signed in; sign out the user's other sessions at once."""
    request.user.set_password(request.GET["to"])
    request.user.save()
    update_session_auth_hash(request, request.user)
    return JsonResponse({"signed_out": revoke_other_sessions(request)})


def change_password_and_email(request):
    """A settings form: a new password (this session kept signed in, Django's way) and a new email, one save each
    (``saves=2``) or one for both."""
    request.user.set_password(request.GET["password"])
    if request.GET.get("saves") == "2":
        request.user.save()
        update_session_auth_hash(request, request.user)
    request.user.email = request.GET["email"]
    request.user.save()
    update_session_auth_hash(request, request.user)
    return JsonResponse({"user": request.user.pk})


def settings_form(request):
    """One form, one transaction (as ATOMIC_REQUESTS makes it): a new email (and password), then "sign out other
    devices", before the commit moves the user's sessions to the new email."""
    with transaction.atomic():
        if request.GET.get("password"):
            request.user.set_password(request.GET["password"])
        request.user.email = request.GET["email"]
        request.user.save()
        update_session_auth_hash(request, request.user)
        signed_out = revoke_other_sessions(request)
    return JsonResponse({"signed_out": signed_out})


urlpatterns = [
    path("account/", include("django_cfkv.urls")),
    path("settings-form/", settings_form),
    path("change-password-and-email/", change_password_and_email),
    path("async-account/sessions/", AsyncUserSessionsView.as_view()),
    path("change-password/", change_password),
    path("change-email/", change_email),
    path("whoami/", whoami),
    path("awhoami/", awhoami),
    path("abump/", abump),
    path("agathered/", agathered),
    path("read/", read),
    path("bump/", bump),
    path("post-bump/", post_bump),
    path("login/<int:pk>/", do_login),
    path("logout/", do_logout),
    path("token/<int:pk>/", token),
    path("revoke/<str:value>/", revoke),
    path("revoke-own/", revoke_own),
    path("delete-then-write/", delete_then_write),
    path("read-then-kv-refuses/", read_then_kv_refuses),
]
