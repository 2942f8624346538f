"""The "Your sessions" page: the signed-in user's sessions, each with a sign-out button.

Mount it with ``path("account/", include("django_cfkv.urls"))`` (its name is
``django_cfkv:sessions``), or mount :class:`UserSessionsView` yourself, with
``template_name`` set to a template of your site's look that includes
``django_cfkv/sessions_list.html``. Only the signed-in user's own sessions are
shown and can be signed out; the buttons post a CSRF-protected form.

Under an ASGI server, mount :class:`AsyncUserSessionsView` instead: the same page, its KV calls awaited on
the event loop rather than made in the thread Django runs sync views in (one for every sync view of the site).
"""

from typing import Any

from django.contrib.auth.mixins import AccessMixin, LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from ..exceptions import KVError
from ..limits import parse_digits
from ..ratelimit.identity import arequest_user
from . import index
from .per_user import (
    arevoke_other_sessions,
    arevoke_session,
    auser_sessions,
    ref_of,
    revoke_other_sessions,
    revoke_session,
    user_sessions,
)

NOT_LISTED = "Your sessions cannot be listed right now: the session store did not answer."
NOT_SIGNED_OUT = "Nothing was signed out: the session store did not answer. Try again in a few seconds."


class _SessionsPage:
    """What both views share: the POST's choice checked, the page rendered; only their KV calls differ."""

    template_name = "django_cfkv/sessions.html"

    def _refused(self, request: HttpRequest) -> HttpResponse | None:
        """Return the 400 for a POST that names no session of the user's to sign out, or None."""
        action, ref = request.POST.get("action"), request.POST.get("ref", "")
        if action not in ("one", "others") or (action == "one" and not index.is_ref(ref)):
            return HttpResponseBadRequest("Choose a session to sign out, or all the others.")
        if action == "one" and ref == ref_of(request):
            return HttpResponseBadRequest("This is the session you are using: log out instead.")
        return None

    def _listed(self, request: HttpRequest, sessions: list[Any] | None) -> HttpResponse:
        """Render the list (None: KV did not answer)."""
        count = parse_digits(request.GET.get("signed_out", ""), 9)  # the visitor's text: "²" or 5,000 digits is none
        return self._render(request, {"sessions": sessions or [], "error": None if sessions is not None else NOT_LISTED,
                                      "signed_out": count})

    def _signed_out(self, request: HttpRequest, count: int | None) -> HttpResponse:
        """Back to the page saying how many were signed out (None: KV did not answer)."""
        if count is None:
            return self._render(request, {"sessions": [], "error": NOT_SIGNED_OUT})
        return redirect(f"{request.path}?signed_out={count}")

    def _render(self, request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
        """Render the page; with an error, a 503 that says when to try again."""
        response = render(request, self.template_name, context, status=503 if context.get("error") else 200)
        if context.get("error"):
            response["Retry-After"] = "5"
        return response


@method_decorator([csrf_protect, never_cache], name="dispatch")
class UserSessionsView(LoginRequiredMixin, _SessionsPage, View):
    """List the signed-in user's sessions (GET); sign one out, or all the others (POST).

    POST ``action=one`` with ``ref`` (a session of this user's other than
    the request's own), or ``action=others``; then back to the page, which
    says how many sessions were signed out. When KV cannot be reached the page
    says so with a 503, never a 500.
    """

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            sessions = user_sessions(request.user, request=request)
        except KVError:
            sessions = None
        return self._listed(request, sessions)

    def post(self, request: HttpRequest) -> HttpResponse:
        refused = self._refused(request)
        if refused:
            return refused
        try:
            if request.POST["action"] == "others":
                count: int | None = revoke_other_sessions(request)
            else:
                count = int(revoke_session(request.user, request.POST["ref"]))
        except KVError:
            count = None
        return self._signed_out(request, count)


class AsyncUserSessionsView(AccessMixin, _SessionsPage, View):
    """:class:`UserSessionsView` as an async view, for a site served by ASGI: the user and the KV calls are
    awaited. It answers as the sync view does: every method needs a sign-in (``LoginRequiredMixin``'s
    settings and answer), then CSRF, the 400s and the 503s."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        # Django's decorators wrap an async view natively; around dispatch() they would see a sync method.
        return csrf_protect(never_cache(super().as_view(**initkwargs)))

    # django-stubs type dispatch() as sync; an async view's dispatch() returns its handler's coroutine.
    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        user = await arequest_user(request)  # request.user is then this user: no blocking query reads it
        if not user.is_authenticated:
            return self.handle_no_permission()
        return await super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    async def get(self, request: HttpRequest) -> HttpResponse:
        try:
            sessions = await auser_sessions(request.user, request=request)
        except KVError:
            sessions = None
        return self._listed(request, sessions)

    async def post(self, request: HttpRequest) -> HttpResponse:
        refused = self._refused(request)
        if refused:
            return refused
        try:
            if request.POST["action"] == "others":
                count: int | None = await arevoke_other_sessions(request)
            else:
                count = int(await arevoke_session(request.user, request.POST["ref"]))
        except KVError:
            count = None
        return self._signed_out(request, count)
