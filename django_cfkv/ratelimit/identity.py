"""Client identity: who a request counts as, under each kind of key.

The address comes from the TCP peer unless the peer is a proxy the site
trusts (:func:`client_ip`), and IPv6 clients count by network
(:func:`group_ip`). Values a client sends (headers, form fields) are folded
into the one form a login compares (:func:`client_value`). Whatever the
identity, KV keys carry only its keyed hash (:func:`client_hash`). Async code
reads the request's user with :func:`arequest_user`.
"""

import hashlib
import hmac
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject
from django.utils.module_loading import import_string

from .. import conf
from .rules import ConfigProblem, Rule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloudflare's published edge ranges, for TRUSTED_PROXIES = ["cloudflare"].
# Source: https://www.cloudflare.com/ips-v4 and https://www.cloudflare.com/ips-v6
# (listed at https://www.cloudflare.com/ips/; also GET https://api.cloudflare.com/client/v4/ips).
CLOUDFLARE_IPV4 = (
    "173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22", "141.101.64.0/18",
    "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20", "197.234.240.0/22", "198.41.128.0/17",
    "162.158.0.0/15", "104.16.0.0/13", "104.24.0.0/14", "172.64.0.0/13", "131.0.72.0/22",
)
CLOUDFLARE_IPV6 = (
    "2400:cb00::/32", "2606:4700::/32", "2803:f800::/32", "2405:b500::/32", "2405:8100::/32",
    "2a06:98c0::/29", "2c0f:f248::/32",
)
# A Worker on another zone calling this site is reported as this address, inside 2a06:98c0::/29
# (https://developers.cloudflare.com/workers/runtime-apis/headers/). It is a client, never a proxy:
# skipping it in X-Forwarded-For would reach the entries that Worker wrote itself.
CLOUDFLARE_WORKERS_CLIENT = ipaddress.ip_address("2a06:98c0:3600::103")

NO_ADDRESS_HINT = ("Behind a proxy that reaches Django over a Unix socket, REMOTE_ADDR is empty: set "
                   'CFKV_RATELIMIT["PROXY_COUNT"] (the number of proxies in front) and ["PROXY_HEADER"] (such as '
                   '"X-Forwarded-For"), or ["TRUSTED_PROXIES"] (such as ["cloudflare"]).')

UNPARSABLE = "unparsable"  # the one client that every trusted header without a valid address counts as


# Addresses and proxies


def parse_networks(items: object) -> tuple[IPNetwork, ...]:
    """Return ip_network objects for CIDR strings; ``"cloudflare"`` stands for Cloudflare's ranges."""
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        raise ConfigProblem("TRUSTED_PROXIES must be a list of networks.", "django_cfkv.E108",
                            'For example ["cloudflare"] or ["10.0.0.0/8"].')
    networks = []
    for item in items:
        if not isinstance(item, str):  # ip_network(True) would be 0.0.0.1/32, trusted without a word
            raise ConfigProblem(f"TRUSTED_PROXIES has {item!r}, which is not a network.", "django_cfkv.E108",
                                'Write networks as strings in CIDR notation ("10.0.0.0/8"), or "cloudflare".')
        names = CLOUDFLARE_IPV4 + CLOUDFLARE_IPV6 if item == "cloudflare" else (item,)
        for name in names:
            try:
                networks.append(ipaddress.ip_network(name, strict=False))
            except (TypeError, ValueError):
                raise ConfigProblem(f"TRUSTED_PROXIES has {item!r}, which is not a network.",
                                    "django_cfkv.E108", 'Use CIDR notation ("10.0.0.0/8") or "cloudflare".')
    return tuple(networks)


def parse_address(text: object) -> IPAddress | None:
    """Return ``text`` as an address (``::ffff:a.b.c.d`` as the IPv4 client it is), or None."""
    try:
        ip = ipaddress.ip_address(str(text).strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.ipv4_mapped or ip  # ::ffff:a.b.c.d is an IPv4 client
    return ip


def client_ip(remote_addr: object, forwarded: str | None = None, *, trusted: Iterable[IPNetwork] = (),
              hops: int = 0) -> str:
    """Return the client's address as text.

    ``remote_addr`` (the TCP peer) is the answer unless the peer is a trusted
    proxy: in ``trusted`` networks, or any peer when ``hops`` (the number of
    proxies in front) is set. Then ``forwarded``, the proxy header's value
    (``CF-Connecting-IP`` or an ``X-Forwarded-For`` chain), is walked from the
    right, where the trusted proxies wrote, and the walk stops at the first
    entry that does not parse: entries left of it are the client's own. With
    ``trusted``, the answer is the first address not in a trusted network
    (``CLOUDFLARE_WORKERS_CLIENT``, a Worker of another zone, is never a proxy);
    with ``hops``, the hops-th from the right. When the walk stops early, the
    last address it passed is the answer, and when even the rightmost entry
    does not parse, ``UNPARSABLE``: never the peer, which behind Cloudflare is
    one of many edge addresses, so junk in the header would spread one client
    over many counts. A header from an untrusted peer never changes the answer.
    """
    trusted = tuple(trusted)
    peer = parse_address(remote_addr)
    as_is = str(remote_addr or "unknown") if peer is None else str(peer)
    # With hops, a peer without an address (a proxy on a Unix socket) is still the proxy in front.
    if peer is None and not hops:
        return as_is
    if not forwarded or not forwarded.strip() or not (hops or (peer is not None and is_trusted_proxy(peer, trusted))):
        return as_is
    parts = forwarded.split(",")
    if hops and len(parts) < hops:
        return as_is  # a chain shorter than the proxies in front did not come through them
    last = None
    for depth, part in enumerate(reversed(parts), 1):
        ip = parse_address(part)
        if ip is None:
            break
        last = ip
        if depth == hops or (not hops and not is_trusted_proxy(ip, trusted)):
            break
    return UNPARSABLE if last is None else str(last)


def is_trusted_proxy(ip: IPAddress, trusted: tuple[IPNetwork, ...]) -> bool:
    """Return True if ``ip`` is in ``trusted``; a Worker of another zone (CLOUDFLARE_WORKERS_CLIENT) never is."""
    return ip != CLOUDFLARE_WORKERS_CLIENT and any(ip in net for net in trusted)


def group_ip(ip: object, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """Return ``ip`` as the network that counts as one client (an IPv6 /64 by default)."""
    address = parse_address(ip)
    if address is None:
        return str(ip)
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix >= address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def meta_name(header: str) -> str:
    """Return the ``request.META`` name of an HTTP header ("CF-Connecting-IP" -> "HTTP_CF_CONNECTING_IP")."""
    name = header.strip().upper().replace("-", "_")
    return name if name.startswith("HTTP_") else "HTTP_" + name


def client_address(meta: Mapping[str, Any], options: Mapping[str, Any], request: HttpRequest | None = None) -> str:
    """Return the client's grouped address from a WSGI environ / ``request.META`` dict, as ``options`` say.

    django-ratelimit's ``RATELIMIT_IP_META_KEY`` (a META key, or a callable or
    dotted path taking the request) is honoured when no proxy option of
    ``CFKV_RATELIMIT`` is set: those win.
    """
    meta_key = options.get("IP_META_KEY")
    proxied = options["PROXY_HEADER"] or options["TRUSTED_PROXIES"] or options["PROXY_COUNT"]
    if meta_key and not proxied and (request is not None or not callable_path(meta_key)):
        ip = _meta_key_address(meta_key, meta, request)
    else:
        header = options["PROXY_HEADER"]
        forwarded = meta.get(meta_name(header)) if header else None
        ip = client_ip(meta.get("REMOTE_ADDR"), forwarded, trusted=options["TRUSTED_PROXIES"],
                       hops=options["PROXY_COUNT"])
    return group_ip(ip, options["IPV4_PREFIX"], options["IPV6_PREFIX"])


def callable_path(meta_key: object) -> bool:
    """Return whether a ``RATELIMIT_IP_META_KEY`` names a callable (not a ``request.META`` key)."""
    return callable(meta_key) or (isinstance(meta_key, str) and "." in meta_key)


def _meta_key_address(meta_key: Any, meta: Mapping[str, Any], request: HttpRequest | None) -> str:
    # Where RATELIMIT_IP_META_KEY says the address is, as django-ratelimit reads it.
    if callable_path(meta_key):
        func = meta_key if callable(meta_key) else import_string(meta_key)
        return str(func(request) or "")
    if meta_key in meta:
        return str(meta[meta_key] or "")
    raise ConfigProblem(f"RATELIMIT_IP_META_KEY is {meta_key!r}, which this request's META does not have.",
                        "django_cfkv.E118", NO_ADDRESS_HINT)


# Values a client sends

# Accents (combining marks) and invisible format characters (soft hyphen, zero-width spaces and joiners,
# bidi controls, variation selectors, BOM): an accent-insensitive comparison passes over them.
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\ufe00-\ufe0f"
                    "\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]+")


def client_value(value: object) -> str:
    """Return a client-sent value (a form field, a header) in the one form that counts.

    Views compare such values loosely: Django's AuthenticationForm strips the
    username and NFKC-normalizes it, many backends ignore case (email logins),
    and MySQL's default collation ignores accents and zero-width characters
    too. Folding the same way here (NFKC, case-folded, accents and invisible
    characters removed, whitespace runs as one space, ends trimmed) keeps
    ``" ｖｉｃｔｉｍ"``, ``"Victim"`` and ``"vïctim"`` from starting fresh counts
    for the account the view signs in as ``victim``.
    """
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", str(value)).casefold())
    if not text.isascii():
        text = _MARKS.sub("", text)
    return " ".join(unicodedata.normalize("NFKC", text).split())


def client_hash(identity: object) -> str:
    """Return the short hash naming a client in KV keys (no address or user id is stored).

    HMAC-SHA256 keyed with ``SECRET_KEY``: an unkeyed hash of an IPv4 address or
    a small user id is reversed by trying them all. Changing ``SECRET_KEY``
    renames every client, so every count starts afresh.
    """
    secret = str(conf.setting("SECRET_KEY")).encode("utf-8", "surrogatepass")
    return hmac.new(secret, str(identity).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


# Key kinds


class AddressSource(Protocol):
    """What :func:`identify` needs of the limiter: the client address of a request."""

    def client_address(self, meta: Mapping[str, Any], request: HttpRequest | None = None) -> str: ...


def request_address(request: HttpRequest, limiter: AddressSource) -> str:
    """Return the (grouped) address a request counts by; raise ConfigProblem (an ImproperlyConfigured) when
    there is none, as behind a proxy on a Unix socket: every client would share one count."""
    address = limiter.client_address(request.META, request)
    if address in ("", "unknown"):
        raise ConfigProblem("The client's address is unknown: REMOTE_ADDR is empty or missing, and no proxy "
                            "setting names another source.", "django_cfkv.E118", NO_ADDRESS_HINT)
    return address


def set_request_user(request: HttpRequest | None, user: Any) -> None:
    """Make ``user`` the request's user, for sync code (``request.user``) and async (``await request.auser()``),
    as login() and alogin() do on Django 6."""
    if request is None:
        return
    request.user = user
    if hasattr(request, "auser"):
        async def auser() -> Any:
            return user

        request.auser = auser


async def arequest_user(request: HttpRequest) -> Any:
    """Return the request's user without a blocking query; ``request.user`` and ``request.auser()`` give it after.

    A ``request.user`` that login(), logout() or their async twins set is the user: on Django 5.2 they leave
    the user ``request.auser()`` cached, which is then stale (a proxy's RemoteUserMiddleware logs users in
    and out so). AuthenticationMiddleware's own user, lazy until read, is awaited with ``request.auser()``.
    """
    user = getattr(request, "user", None)
    if user is None or isinstance(user, SimpleLazyObject):
        user = await request.auser()
    set_request_user(request, user)
    return user


#: ``identify(user=)`` not given: the user is ``request.user``.
UNREAD: Any = object()


def identify(request: HttpRequest, rule: Rule, limiter: AddressSource, user: Any = UNREAD) -> str | None:
    """Return the identity ``rule`` counts this request under, or None when the rule does not apply.

    ``user``, when given, is the request's user (as async code reads it, :func:`arequest_user`)."""
    kind, arg = rule.key, rule.key_arg
    if kind in ("user", "user_or_ip"):
        user = getattr(request, "user", None) if user is UNREAD else user
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        if kind == "user":
            return None
    if kind in ("ip", "user_or_ip"):
        return "ip:" + request_address(request, limiter)
    if kind == "header":
        return f"header:{arg.lower()}:{client_value(request.headers.get(arg, ''))}"
    if kind in ("get", "post"):  # the last value, as request.GET[name] and request.POST[name] give the view
        values = request.GET if kind == "get" else request.POST
        return f"{kind}:{arg}:{client_value(values.get(arg, ''))}"
    value = arg(rule.name, request)
    return None if value is None else f"callable:{value}"
