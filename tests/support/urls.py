"""Views the fault and bad-input tests drive through Django's test client: a session counter and a plain page."""

from django.http import HttpResponse
from django.urls import path


def session_counter(request):
    """Read and bump a counter in the session: loads and saves on every request."""
    n = request.session.get("n", 0) + 1
    request.session["n"] = n
    return HttpResponse(str(n))


def session_reader(request):
    return HttpResponse(str(request.session.get("n", 0)))


def ok(request):
    return HttpResponse("ok")


urlpatterns = [
    path("session/", session_counter),
    path("session/read/", session_reader),
    path("login/", ok),
]
