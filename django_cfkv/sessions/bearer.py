"""Bearer sessions: ``Authorization: Bearer <token>`` selects a session in KV.

A token is a session key (see :func:`django_cfkv.sessions.issue_token`), so
API clients, mobile apps and Workers share one session store with browsers.
"""

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.cache import patch_vary_headers

from ..exceptions import KVError
from . import plans
from .keys import is_valid_key
from .plans import Finished, Plan, Twin
from .store import SessionStore
from .tokens import engine_session_store

#: bearer_token()'s answer for an Authorization header that names no possible session.
MALFORMED: Any = object()


def bearer_token(request: HttpRequest) -> str | None:
    """Return the request's bearer token, None without one, or MALFORMED."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None  # another scheme (Basic...) is not ours to judge
    token = token.strip()
    return token if is_valid_key(token) else MALFORMED


def invalid_token(description: str) -> JsonResponse:
    """Return RFC 6750's 401 answer for a token that cannot be used."""
    response = JsonResponse({"error": "invalid_token", "error_description": description}, status=401)
    response["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{description}"'
    response["Cache-Control"] = "no-store"
    patch_vary_headers(response, ("Authorization",))
    return response


def unavailable() -> JsonResponse:
    """Return the 503 answer for a session store that cannot be reached (never a 500)."""
    response = JsonResponse({"error": "temporarily_unavailable",
                             "error_description": "The session store cannot be reached."}, status=503)
    response["Retry-After"] = "5"
    response["Cache-Control"] = "no-store"
    patch_vary_headers(response, ("Authorization",))
    return response


class BearerSessionMiddleware:
    """Load ``request.session`` from the bearer token; place right after SessionMiddleware.

    With the header, the session cookie is neither read nor set, CSRF checks
    are off (a browser never adds this header on its own, so a cross-site
    form cannot send it), and a malformed, unknown or expired token is a 401
    with ``WWW-Authenticate: Bearer error="invalid_token"``, never a fallback to
    the cookie. Without the header nothing changes. Each authenticated request
    slides the session's expiry, written at most once per
    SESSION_CFKV_REFRESH_INTERVAL, as Workers session code's refresh() does;
    a failed refresh is logged and the response kept. A store that cannot be
    reached is a 503 with Retry-After, never a 500. The token is the session
    key, so login() and update_session_auth_hash() keep it (no cycling); a
    login as another user flushes the session, which ends the token. In an
    async stack the session is loaded and saved awaiting KV (aload, asave),
    with no thread.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.session_store = engine_session_store()  # ImproperlyConfigured unless a KV engine
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        token = bearer_token(request)
        if token is None:
            return self.get_response(request)
        session = self.open_session(token)
        if not isinstance(session, SessionStore):
            return self.refuse(request, session)
        self.enter(request, session)
        return self.leave(request, session, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = bearer_token(request)
        if token is None:
            return await self.get_response(request)
        session = await self.aopen_session(token)
        if not isinstance(session, SessionStore):
            return self.refuse(request, session)
        self.enter(request, session)
        response = await self.get_response(request)
        return await self.aleave(request, session, response)

    def open_session(self, token: str) -> SessionStore | JsonResponse:
        """Return the loaded SessionStore for ``token``, or the error response to send."""
        return plans.run(self._open(token), self.session_store.get_kv)

    async def aopen_session(self, token: str) -> SessionStore | JsonResponse:
        """Async twin of :meth:`open_session`."""
        return await plans.arun(self._open(token), self.session_store.aget_kv)

    def _open(self, token: str) -> Plan[SessionStore | JsonResponse]:
        if token is MALFORMED:
            return invalid_token("The access token is malformed.")
        session = self.session_store(token)
        try:
            yield Twin(session.load_now, session.aload_now)
        except KVError:  # SESSION_CFKV_ON_LOAD_ERROR = "raise"
            return unavailable()
        if session.load_failed:
            return unavailable()
        if session.session_key is None:
            return invalid_token("The access token is unknown or expired.")
        session.keep_key = True
        return session

    def enter(self, request: HttpRequest, session: SessionStore) -> None:
        request.session = session
        request.session_from_bearer = True  # type: ignore[attr-defined]  # documented for views
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]  # the flag CsrfViewMiddleware honours

    def leave(self, request: HttpRequest, session: SessionStore, response: HttpResponseBase) -> HttpResponseBase:
        return plans.run(self._leave(request, session, response), self.session_store.get_kv)

    async def aleave(self, request: HttpRequest, session: SessionStore, response: HttpResponseBase
                     ) -> HttpResponseBase:
        """Async twin of :meth:`leave`."""
        return await plans.arun(self._leave(request, session, response), self.session_store.aget_kv)

    def _leave(self, request: HttpRequest, session: SessionStore, response: HttpResponseBase
               ) -> Plan[HttpResponseBase]:
        current: Any = getattr(request, "session", session)  # the view may have put another store there
        if response.status_code < 500 and current.session_key is not None and not current.is_empty():
            try:
                yield Finished(current.save, current.asave)  # a client gone still has it saved
            except UpdateError:
                raise SessionInterrupted(
                    "The session was deleted before the request completed: the token was "
                    "revoked in a concurrent request, for example."
                )
        patch_vary_headers(response, ("Authorization",))
        # SessionMiddleware, which runs next, must neither save the session
        # again nor set a cookie for it.
        request.__dict__.pop("session", None)
        return response

    def refuse(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """Answer ``response`` without letting SessionMiddleware touch the cookie session."""
        request.__dict__.pop("session", None)
        return response
