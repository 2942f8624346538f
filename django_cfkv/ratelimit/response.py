"""What a client sees: the RateLimit headers on every counted response, and the 429 over the limit."""

import logging
from collections.abc import Iterable, Sequence

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils.module_loading import import_string

from ..exceptions import Ratelimited
from .limiter import Usage, get_limiter

logger = logging.getLogger("django_cfkv.ratelimit")


def header_values(usages: Iterable[Usage]) -> dict[str, str]:
    """Return the RateLimit-Policy and RateLimit header values for ``usages``.

    Syntax of draft-ietf-httpapi-ratelimit-headers-10 (section 3 and 4,
    https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/), also what
    Cloudflare's API sends: Structured Field lists of quoted policy names with
    ``q`` (quota) and ``w`` (window, s), and ``r`` (remaining) and ``t`` (seconds to reset).
    """
    usages = list(usages)
    return {
        "RateLimit-Policy": ", ".join(f'"{u.policy}";q={u.limit};w={u.period}' for u in usages),
        "RateLimit": ", ".join(f'"{u.policy}";r={u.remaining};t={u.reset}' for u in usages),
    }


def add_headers(response: HttpResponseBase, usages: Iterable[Usage | None]) -> HttpResponseBase:
    """Add the RateLimit headers for ``usages`` to ``response`` (after any already there)."""
    for name, value in header_values([u for u in usages if u is not None]).items():
        if value:
            if name in response.headers:
                value = f"{response.headers[name]}, {value}"
            response.headers[name] = value
    return response


def limited_response(request: HttpRequest, usages: Sequence[Usage],
                     exception: Ratelimited | None = None) -> HttpResponseBase:
    """Return the answer to a request over its limit: 429 with Retry-After and RateLimit headers.

    ``CFKV_RATELIMIT["VIEW"]`` (a view taking ``(request, exception)``)
    replaces the body; otherwise JSON for clients that prefer it, else a short
    HTML page (template ``django_cfkv/ratelimited.html``).
    """
    limited = [u for u in usages if u.limited] or list(usages)
    retry_after = max((u.reset for u in limited), default=60)
    response = None
    view = get_limiter().options["VIEW"]
    if view:
        try:
            exception = exception or Ratelimited("Rate limit exceeded.", usage=limited)
            response = import_string(view)(request, exception)
        except Exception as exc:
            logger.exception("CFKV_RATELIMIT['VIEW'] failed; answering with the default 429 (%s).", exc)
    if response is None:
        response = _default_response(request, retry_after)
    if "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(retry_after)
    return add_headers(response, usages)


def _default_response(request: HttpRequest, retry_after: int) -> HttpResponse:
    if request.get_preferred_type(["text/html", "application/json"]) == "application/json":
        return JsonResponse({"error": "rate_limited", "detail": "Too many requests. Try again later.",
                             "retry_after": retry_after}, status=429)
    body: str
    try:
        body = render_to_string("django_cfkv/ratelimited.html", {"retry_after": retry_after})
    except TemplateDoesNotExist:
        body = f"<!doctype html><title>Too many requests</title><h1>Too many requests</h1>" \
               f"<p>Try again in {retry_after} seconds.</p>"
    return HttpResponse(body, status=429)
