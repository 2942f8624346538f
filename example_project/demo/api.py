"""The JSON API: bearer tokens backed by KV sessions, and a rate-limited ping.

A token is a session key: ``issue_token`` saves a session for the user and
returns its key, and ``BearerSessionMiddleware`` loads that session for
requests carrying ``Authorization: Bearer <token>``, and ``revoke_token``
deletes it (from this view, or from anywhere else: an admin action, a
password change).
The views are exempt from CSRF because a bearer token is never sent by a
browser on its own, unlike a cookie; the token endpoint takes a password.

When KV cannot be reached, a call that needs it answers 503 with Retry-After
and ``{"error": "temporarily_unavailable"}``, as BearerSessionMiddleware does
for a token whose session cannot be loaded: never a 500, and never a 401 for
a session that may well be signed in.
"""

import json

from django.contrib.auth import authenticate
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from django_cfkv.exceptions import KVError
from django_cfkv.sessions import issue_token, revoke_token

from .views import RETRY_AFTER


def _error(status, message, **headers):
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _unavailable(description):
    response = JsonResponse({"error": "temporarily_unavailable", "error_description": description}, status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def _unauthorized(message):
    return _error(401, message, WWW_Authenticate='Bearer realm="api"')


def _by_token(request):
    """Return whether BearerSessionMiddleware authenticated the request by its token."""
    return getattr(request, "session_from_bearer", False)


def _credentials(request):
    """Return (username, password) from a JSON or form body."""
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except (ValueError, RecursionError):  # RecursionError: JSON nested past the recursion limit
            return None, None
        if not isinstance(data, dict):
            return None, None
    else:
        data = request.POST
    return data.get("username"), data.get("password")


@csrf_exempt
@require_http_methods(["POST", "DELETE"])
def token(request):
    """POST: exchange credentials for a bearer token. DELETE: revoke the token in the header."""
    if request.method == "DELETE":
        if not _by_token(request):
            return _unauthorized("Send the token to revoke as 'Authorization: Bearer <token>'.")
        # BearerSessionMiddleware loaded the token's session (an unknown token is
        # a 401 before this view): its key is the token.
        try:
            revoke_token(request.session.session_key)
        except KVError:
            return _unavailable("Workers KV did not answer, so the token was not revoked. Try again.")
        return HttpResponse(status=204)
    username, password = _credentials(request)
    if not isinstance(username, str) or not isinstance(password, str):
        return _error(400, 'Send {"username": ..., "password": ...} as JSON or form data.')
    user = authenticate(request, username=username, password=password)
    if user is None:
        return _unauthorized("Wrong username or password.")
    try:
        bearer = issue_token(request, user)
    except KVError:
        return _unavailable("Workers KV did not answer, so no token was issued. Try again.")
    return JsonResponse({"token": bearer, "token_type": "Bearer"}, status=201)


@require_GET
def me(request):
    """Return the signed-in user (by bearer token or session cookie)."""
    if not request.user.is_authenticated:
        if getattr(request.session, "load_failed", False):  # a cookie session KV did not return
            return _unavailable("Workers KV did not answer, so the session could not be read. Try again.")
        return _unauthorized("Sign in first: POST /api/token, then send 'Authorization: Bearer <token>'.")
    return JsonResponse({
        "username": request.user.get_username(),
        "is_staff": request.user.is_staff,
        "session_expires": request.session.get_expiry_date().isoformat(),
        "via": "bearer" if _by_token(request) else "cookie",
    })


@require_GET
def ping(request):
    """Return a pong: limited to 10 calls a minute per user, or per address when anonymous."""
    user = request.user.get_username() if request.user.is_authenticated else None
    return JsonResponse({"pong": True, "user": user, "time": timezone.now().isoformat()})
