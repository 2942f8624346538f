"""Views and URLs for the rate-limiting tests."""

from django.http import HttpResponse, JsonResponse
from django.urls import path

from django_cfkv.ratelimit import ratelimit


def ok(request):
    return HttpResponse("ok")


@ratelimit(rate="2/h", key="ip")
def decorated(request):
    return HttpResponse("decorated")


@ratelimit(rate="2/h", key="ip", method="POST")
def decorated_post_only(request):
    return HttpResponse("post only")


@ratelimit(rate="1/h", key="ip", block=False)
def soft(request):
    return HttpResponse("limited" if request.limited else "fine")


@ratelimit(rate="3/m", key="ip")
def limited(request):
    return HttpResponse("ok")


@ratelimit(rate="2/h", key="ip")
async def decorated_async(request):
    return HttpResponse("async")


def sign_in(request):
    """A login view as sites write it: Django's AuthenticationForm over request.POST."""
    from django.contrib.auth.forms import AuthenticationForm  # needs the app registry; this module must not

    form = AuthenticationForm(request, data=request.POST)
    return HttpResponse("welcome" if form.is_valid() else "wrong username or password")


@ratelimit(rate="3/h", key="post:username", method="POST")
def decorated_sign_in(request):
    return sign_in(request)


def custom_limited(request, exception):
    """A CFKV_RATELIMIT['VIEW'] replacement for the 429 page."""
    return JsonResponse({"custom": True, "policies": [u.policy for u in exception.usage]}, status=429)


def custom_limited_with_its_own_wait(request, exception):
    """A CFKV_RATELIMIT['VIEW'] that says itself when to come back."""
    response = JsonResponse({"custom": True}, status=429)
    response["Retry-After"] = "120"
    return response


@ratelimit(rate="1/h", key="ip", block=False, group="stacked-tight")
@ratelimit(rate="100/h", key="ip", block=False, group="stacked-roomy")
def stacked(request):
    """Two limits on one view: ``request.limited`` once any of them is over."""
    return HttpResponse("limited" if request.limited else "fine")


def broken_key(group, request):
    raise RuntimeError("a bug in a key function")


def api_key(group, request):
    return request.headers.get("X-Team")


urlpatterns = [
    path("login/", ok),
    path("sign-in/", sign_in),
    path("decorated-sign-in/", decorated_sign_in),
    path("api/items/", ok),
    path("open/", ok),
    path("decorated/", decorated),
    path("decorated-post/", decorated_post_only),
    path("soft/", soft),
    path("decorated-async/", decorated_async),
    path("limited/", limited),
    path("stacked/", stacked),
]


def two_per_hour(group, request):
    """A rate chosen per request, named by its dotted path (test_decorator.py)."""
    return "2/h"
