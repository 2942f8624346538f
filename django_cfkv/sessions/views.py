"""The "Your sessions" page: the signed-in user's sessions, each with a sign-out button.

Mount it with ``path("account/", include("django_cfkv.urls"))`` (its name is
``django_cfkv:sessions``), or mount :class:`UserSessionsView` yourself, with
``template_name`` set to a template of your site's look that includes
``django_cfkv/sessions_list.html``. Only the signed-in user's own sessions are
shown and can be signed out; the buttons post a CSRF-protected form.
"""

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from ..exceptions import KVError
from . import index
from .per_user import ref_of, revoke_other_sessions, revoke_session, user_sessions


@method_decorator([csrf_protect, never_cache], name="dispatch")
class UserSessionsView(LoginRequiredMixin, View):
    """List the signed-in user's sessions (GET); sign one out, or all the others (POST).

    POST ``action=one`` with ``ref`` (a session of this user's other than
    the request's own), or ``action=others``; then back to the page, which
    says how many sessions were signed out. When KV cannot be reached the page
    says so with a 503, never a 500.
    """

    template_name = "django_cfkv/sessions.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            sessions, error = user_sessions(request.user, request=request), None
        except KVError:
            sessions, error = [], "Your sessions cannot be listed right now: the session store did not answer."
        signed_out = request.GET.get("signed_out", "")
        context: dict[str, Any] = {"sessions": sessions, "error": error,
                                   "signed_out": int(signed_out) if signed_out.isdigit() else None}
        return self._render(request, context)

    def post(self, request: HttpRequest) -> HttpResponse:
        action, ref = request.POST.get("action"), request.POST.get("ref", "")
        if action not in ("one", "others") or (action == "one" and not index.is_ref(ref)):
            return HttpResponseBadRequest("Choose a session to sign out, or all the others.")
        if action == "one" and ref == ref_of(request):
            return HttpResponseBadRequest("This is the session you are using: log out instead.")
        try:
            if action == "others":
                count = revoke_other_sessions(request)
            else:
                count = int(revoke_session(request.user, ref))
        except KVError:
            return self._render(request, {"sessions": [], "error": "Nothing was signed out: the session store did "
                                                                   "not answer. Try again in a few seconds."})
        return redirect(f"{request.path}?signed_out={count}")

    def _render(self, request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
        """Render the page; with an error, a 503 that says when to try again."""
        response = render(request, self.template_name, context, status=503 if context.get("error") else 200)
        if context.get("error"):
            response["Retry-After"] = "5"
        return response
