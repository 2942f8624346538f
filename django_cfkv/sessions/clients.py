"""The client a session is signed in from, as its user's list of sessions shows it: device and location.

At sign-in (Django's ``user_logged_in``, and :func:`~django_cfkv.sessions.issue_token`)
the session records ``{"via", "device", "where"}`` under ``index.CLIENT_KEY``:
``via`` is "cookie" or "bearer"; ``device`` a short description from the
User-Agent; ``where`` a coarse location: the country Cloudflare puts in
``CF-IPCountry`` when the request came from Cloudflare's own addresses (a
client cannot send it past Cloudflare), else the client's network as the rate
limiter groups addresses (its trusted proxies, ``IPV4_PREFIX`` and
``IPV6_PREFIX``). A client controls its User-Agent, so the description is
text to show escaped, never to trust.
"""

import functools
import logging
import re
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.signals import user_logged_in
from django.http import HttpRequest

from ..ratelimit import CLOUDFLARE_WORKERS_CLIENT, get_limiter, parse_networks
from ..ratelimit.identity import callable_path, is_trusted_proxy, parse_address
from . import index
from .store import SessionStore
from .users import SESSION_KEY

logger = logging.getLogger("django_cfkv")

# First match wins: Edge and Opera say "Chrome" too, Chrome says "Safari", iOS browsers say "Safari".
_BROWSERS = (("Edg", "Edge"), ("OPR", "Opera"), ("SamsungBrowser", "Samsung Internet"), ("FxiOS", "Firefox"),
             ("Firefox", "Firefox"), ("CriOS", "Chrome"), ("HeadlessChrome", "Headless Chrome"),
             ("Chrome", "Chrome"), ("Safari", "Safari"),
             ("curl", "curl"), ("Wget", "Wget"), ("python-requests", "Python requests"), ("okhttp", "OkHttp"))
_SYSTEMS = (("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"), ("CrOS", "ChromeOS"),
            ("Windows", "Windows"), ("Macintosh", "macOS"), ("Mac OS X", "macOS"), ("Linux", "Linux"))
_COUNTRY = re.compile(r"[A-Z][A-Z0-9]")  # ISO 3166-1 alpha-2, or Cloudflare's XX (unknown) and T1 (Tor)


def describe_device(user_agent: str) -> str:
    """Return a short description of the client a User-Agent names ("Firefox on Linux"), or the header cut short."""
    browser = next((name for token, name in _BROWSERS if re.search(rf"\b{token}/", user_agent)), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or index.clean_text(user_agent, index.DEVICE_MAX)


@functools.cache
def _cloudflare() -> tuple[Any, ...]:
    return parse_networks(["cloudflare"])


def came_through_cloudflare(request: HttpRequest) -> bool:
    """Return True if the TCP peer is one of Cloudflare's addresses, for a client's request: not a Worker's
    subrequest from another zone, which Cloudflare marks with CF-Connecting-IP CLOUDFLARE_WORKERS_CLIENT."""
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    client = parse_address(request.META.get("HTTP_CF_CONNECTING_IP", ""))
    return peer is not None and is_trusted_proxy(peer, _cloudflare()) and client != CLOUDFLARE_WORKERS_CLIENT


def location(request: HttpRequest) -> str:
    """Return where the request comes from: CF-IPCountry through Cloudflare, else the client's network."""
    country = request.META.get("HTTP_CF_IPCOUNTRY", "").strip().upper()
    if _COUNTRY.fullmatch(country) and came_through_cloudflare(request):
        return country
    try:  # the request: a callable RATELIMIT_IP_META_KEY reads it
        return get_limiter().client_address(request.META, request)
    except Exception as exc:  # the project's IP_META_KEY, or no address: the place is unknown, the sign-in goes on
        logger.warning("The location of a sign-in is unknown: the client's address could not be read (%s).",
                       type(exc).__name__)
        return ""


def client_of(request: HttpRequest | None, via: str) -> dict[str, str]:
    """Return the client record of a sign-in by ``request`` (``via`` "cookie" or "bearer"); only ``via`` when
    sessions are not indexed (nothing shows the rest)."""
    if request is None or not index.enabled():
        return {"via": via}
    return index.client_fields({"via": via, "device": describe_device(request.META.get("HTTP_USER_AGENT", "")),
                                "where": location(request)})


async def aclient_of(request: HttpRequest | None, via: str) -> dict[str, str]:
    """:func:`client_of` from async code. A RATELIMIT_IP_META_KEY callable is the project's own code and may
    query the database, so then it runs in a thread, as the rate limiter runs it."""
    if request is not None and index.enabled() and callable_path(get_limiter().options.get("IP_META_KEY")):
        return await sync_to_async(client_of)(request, via)
    return client_of(request, via)


def note_sign_in(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    """Record the client in the session a login() just made (Django's ``user_logged_in``).

    Only a session that login() has just moved to a new key (or flushed) and
    that holds the user signing in is noted: a request's cookie session is
    left alone when the sign-in was issue_token()'s.
    """
    session = getattr(request, "session", None)
    if request is None or not isinstance(session, SessionStore) or not session.signing_in:
        return
    if user is None or session.get(SESSION_KEY) != user._meta.pk.value_to_string(user):
        return
    session.note_client(client_of(request, "bearer" if session.keep_key else "cookie"))


user_logged_in.connect(note_sign_in, dispatch_uid="django_cfkv.sessions.note_sign_in")
