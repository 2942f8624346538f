"""Rate limiting on Workers KV: rates, windows, client identity, counting, the 429 and the decorator.

:class:`django_cfkv.middleware.RateLimitMiddleware` applies the configured
rules to every request on top of this module.

Counting without lost updates
-----------------------------
KV has no atomic increment, allows one write per second per key, and its
reads may be up to ~60 s stale at other locations. So no process ever writes
a counter that another process writes. Each process counts locally and
writes only its own *shard* ``rl:<policy>:<client>:<period>:<window>:<process>.<n>``
(the count is in the value and in the metadata), and only once the client
has made ``MIN_WRITE_COUNT`` (2) requests to it in the window, so a client
seen once costs no write. All of its changed shards go out in one bulk
write, at most once per ``SYNC_INTERVAL`` (1 s). The total for a (policy,
client) is the local count plus the other shards' counts, which come from
one listing by prefix (the counts are in the metadata, so no value is read)
at most once per ``SYNC_INTERVAL``.

API calls must not grow with the number of clients, which an attacker
chooses (IPv6 networks, parameter values, user names), so list calls share
one per-process budget, ``LIST_BUDGET`` per second across all clients. Past
it, a request is decided from the local count plus the last other-shard
count read, without waiting for KV. A process therefore makes at most one
bulk write per second plus ``LIST_BUDGET`` lists per second, however many
clients send however fast. Memory is bounded too: at most ``MAX_SHARDS``
shards are kept. Of the least recently used, a closed window is dropped
first, else the lowest count, so a flood of identities that each send a
request or two does not push out a busier client. A shard built again after
being dropped gets a new key (the ``<n>``, unique in the process): the key
it had keeps its stored count, which the first read adds in, so the count
goes on from what is stored and no write ever lowers a stored count.

The price is accuracy. Another process's requests are seen up to about two
sync intervals late (its flush, then our read), so a window may admit up to
about (processes - 1) x per-process request rate x 2 x SYNC_INTERVAL more
than the limit, plus (processes - 1) single requests never written, and more
while KV's caches at other locations are stale or the list budget is spent.
Each process also enforces the limit on its own count, so no window admits
more than processes x limit.
When a limit must be exact, set ``CACHE`` to a Django cache with an atomic
``incr`` (Redis, Memcached).
"""

import hashlib
import hmac
import ipaddress
import itertools
import logging
import math
import re
import secrets
import threading
import unicodedata
from collections import OrderedDict
from functools import wraps
from typing import NamedTuple

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.http import HttpResponse, JsonResponse
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils.module_loading import import_string

from . import clock, conf
from .exceptions import CFKVConfigurationError, KVBulkError, KVError, Ratelimited
from .metadata import RATELIMIT, kv_ttl
from .metadata import build as build_metadata
from .metadata import read as read_metadata

logger = logging.getLogger("django_cfkv.ratelimit")

SHARD_PREFIX = "rl:"
TTL_MARGIN = 10  # seconds a shard outlives its window, so late readers still find it
FIRST_WRITE_DELAY = 0.1  # seconds: a burst's first requests go out in one write, not one each
OUTAGE_BACKOFF = 5.0  # seconds without KV calls after a failure
LOG_EVERY = 30.0  # seconds between two "KV unreachable" log lines
MIN_WRITE_COUNT = 2  # a shard is written once it counts this many requests: a client seen once costs no write
MAX_SHARDS = 10_000  # shards kept in memory per process (a few MB)
EVICT_SCAN = 64  # least recently used shards looked at for one that is closed or has nothing to write

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

DEFAULTS = {
    "ENABLED": True,
    "ALIAS": "default",
    "CACHE": None,
    "RULES": [],
    "FAIL_OPEN": True,
    "TRUSTED_PROXIES": [],
    "PROXY_HEADER": None,
    "PROXY_COUNT": 0,
    "IPV4_PREFIX": 32,
    "IPV6_PREFIX": 64,
    "VIEW": None,
    "SYNC_INTERVAL": 1.0,
    "LIST_BUDGET": 1.0,
}
RULE_FIELDS = {"path", "methods", "rate", "key", "group"}
SIMPLE_KEYS = ("ip", "user", "user_or_ip")
PREFIXED_KEYS = ("header", "get", "post")  # django-ratelimit's spelling: request.GET / request.POST
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_RE = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]*)\s*([smhd])\s*$")  # ASCII digits: \d takes "೦"
_GROUP_RE = re.compile(r"^[\w.\-/]{1,100}$")


#: One mistake in ``CFKV_RATELIMIT``: the package's configuration error, with the check id that reports it.
ConfigProblem = CFKVConfigurationError


# Rates and windows


def parse_rate(rate):
    """Return ``(limit, period_seconds)`` for a rate such as ``"5/m"`` or ``"100/10m"``."""
    match = _RATE_RE.match(rate) if isinstance(rate, str) else None
    if not match or int(match.group(1)) < 1 or match.group(2).startswith("0"):
        raise ConfigProblem(f"Invalid rate {rate!r}.", "django_cfkv.E104",
                            'Write "<count>/<period>": "5/m", "100/10m", "1000/h", "10/s" or "50000/d".')
    return int(match.group(1)), int(match.group(2) or 1) * UNITS[match.group(3)]


def window(now, period):
    """Return ``(index, start, end)`` of the fixed window of ``period`` seconds holding ``now``."""
    index = int(now // period)
    return index, index * period, (index + 1) * period


# Client identity


def parse_networks(items):
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


def _address(text):
    try:
        ip = ipaddress.ip_address(str(text).strip())
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if ip.version == 6 else ip  # ::ffff:a.b.c.d is an IPv4 client


UNPARSABLE = "unparsable"  # the one client that every trusted header without a valid address counts as


def client_ip(remote_addr, forwarded=None, *, trusted=(), hops=0):
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
    peer = _address(remote_addr)
    if peer is None:
        return str(remote_addr or "unknown")
    if not forwarded or not forwarded.strip() or not (hops or _is_proxy(peer, trusted)):
        return str(peer)
    parts = forwarded.split(",")
    if hops and len(parts) < hops:
        return str(peer)  # a chain shorter than the proxies in front did not come through them
    last = None
    for depth, part in enumerate(reversed(parts), 1):
        ip = _address(part)
        if ip is None:
            break
        last = ip
        if depth == hops or (not hops and not _is_proxy(ip, trusted)):
            break
    return UNPARSABLE if last is None else str(last)


def _is_proxy(ip, trusted):
    return ip != CLOUDFLARE_WORKERS_CLIENT and any(ip in net for net in trusted)


def group_ip(ip, ipv4_prefix=32, ipv6_prefix=64):
    """Return ``ip`` as the network that counts as one client (an IPv6 /64 by default)."""
    address = _address(ip)
    if address is None:
        return str(ip)
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix >= address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def meta_name(header):
    """Return the ``request.META`` name of an HTTP header ("CF-Connecting-IP" -> "HTTP_CF_CONNECTING_IP")."""
    name = header.strip().upper().replace("-", "_")
    return name if name.startswith("HTTP_") else "HTTP_" + name


# Accents (combining marks) and invisible format characters (soft hyphen, zero-width spaces and joiners,
# bidi controls, variation selectors, BOM): an accent-insensitive comparison passes over them.
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\ufe00-\ufe0f"
                    "\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]+")


def client_value(value):
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


def client_hash(identity):
    """Return the short hash naming a client in KV keys (no address or user id is stored).

    HMAC-SHA256 keyed with ``SECRET_KEY``: an unkeyed hash of an IPv4 address or
    a small user id is reversed by trying them all. Changing ``SECRET_KEY``
    renames every client, so every count starts afresh.
    """
    secret = str(conf.setting("SECRET_KEY")).encode("utf-8", "surrogatepass")
    return hmac.new(secret, str(identity).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


# Rules


class Rule(NamedTuple):
    """One compiled rule; ``name`` is its policy name in KV keys and headers."""

    name: str
    limit: int
    period: int
    path: object  # compiled regex, or None for the decorator
    methods: frozenset  # empty: every method
    key: str  # "ip", "user", "user_or_ip", "header", "get", "post" or "callable"
    key_arg: object  # header or field name, or the callable

    def matches(self, path, method):
        """Return whether the rule applies to a request for ``path`` with ``method``."""
        if self.methods and method.upper() not in self.methods:
            return False
        return self.path is None or self.path.search(path) is not None


def compile_key(key):
    """Return ``(kind, argument)`` for a rule's key; import a dotted-path callable."""
    if callable(key):
        return "callable", key
    if isinstance(key, str):
        if key in SIMPLE_KEYS:
            return key, None
        kind, sep, arg = key.partition(":")
        if sep and kind in PREFIXED_KEYS and arg.strip():
            return kind, arg.strip()
        if sep and kind == "param":  # removed: it read the query string first, even on a POST
            name = arg.strip() or "<name>"
            raise ConfigProblem(
                f"The rate-limit key {key!r} no longer exists: it read the query string before the form, "
                f"so a client adding ?{name}=<anything> to each POST got a fresh count.", "django_cfkv.E105",
                f'Use "post:{name}" for the form field the view reads (request.POST), '
                f'or "get:{name}" for the query-string parameter (request.GET).')
        if "." in key and not sep:
            try:
                func = import_string(key)
            except ImportError as exc:
                raise ConfigProblem(f"Rate-limit key {key!r} cannot be imported: {exc}", "django_cfkv.E105")
            if callable(func):
                return "callable", func
    raise ConfigProblem(f"Invalid rate-limit key {key!r}.", "django_cfkv.E105",
                        'Use "ip", "user", "user_or_ip", "header:<name>", "get:<name>", "post:<name>" or '
                        "the dotted path of a callable(group, request) returning a string.")


def compile_rule(spec, index=None):
    """Return a Rule from a rule dict; raise ConfigProblem saying what to fix."""
    where = "the rate-limit rule" if index is None else f"CFKV_RATELIMIT['RULES'][{index}]"
    if not isinstance(spec, dict):
        raise ConfigProblem(f"{where} must be a dict.", "django_cfkv.E102",
                            '{"path": r"^/login/$", "methods": ["POST"], "rate": "5/m", "key": "ip"}')
    unknown = set(spec) - RULE_FIELDS
    if unknown or "rate" not in spec:
        raise ConfigProblem(f"{where} has unknown fields {sorted(unknown)} or no 'rate'.", "django_cfkv.E102",
                            f"A rule takes {sorted(RULE_FIELDS)}; 'rate' is required.")
    limit, period = parse_rate(spec["rate"])
    path = spec.get("path")
    try:
        regex = re.compile(path) if path is not None else None
    except (re.error, TypeError) as exc:
        raise ConfigProblem(f"{where} has an invalid path regex {path!r}: {exc}.", "django_cfkv.E103")
    methods = spec.get("methods") or ()
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, (list, tuple, set, frozenset)) or not all(isinstance(m, str) for m in methods):
        raise ConfigProblem(f"{where} has invalid methods {methods!r}.", "django_cfkv.E106",
                            'Use a list of HTTP methods, such as ["POST"], or leave it out for all.')
    kind, arg = compile_key(spec.get("key", "ip"))
    group = spec.get("group")
    if group is None:
        key = spec.get("key", "ip")
        if callable(key):  # its repr holds an address, which differs in every process
            key = f"{getattr(key, '__module__', None)}.{getattr(key, '__qualname__', type(key).__qualname__)}"
        digest = hashlib.sha256(repr((path, sorted(methods), spec["rate"], key)).encode())
        group = "r" + digest.hexdigest()[:10]
    elif not isinstance(group, str) or not _GROUP_RE.match(group):
        raise ConfigProblem(f"{where} has an invalid group {group!r}.", "django_cfkv.E107",
                            "Use 1 to 100 letters, digits, '_', '-', '.' or '/'.")
    methods = {m.upper() for m in methods}
    if "GET" in methods:  # Django answers HEAD with the GET view: a GET limit that skipped HEAD would not hold
        methods.add("HEAD")
    return Rule(group, limit, period, regex, frozenset(methods), kind, arg)


def view_group(view):
    """Return the default group of a decorated view: its dotted name, made safe for KV keys."""
    name = f"{getattr(view, '__module__', '')}.{getattr(view, '__qualname__', repr(view))}"
    return re.sub(r"[^\w.\-/]", "_", name)[-100:]


def compile_settings(raw):
    """Return ``(options, rules, problems)``: merged options, valid rules, and every ConfigProblem."""
    if not isinstance(raw, dict):
        return dict(DEFAULTS), [], [ConfigProblem("CFKV_RATELIMIT must be a dict.", "django_cfkv.E101")]
    problems = []
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        problems.append(ConfigProblem(f"CFKV_RATELIMIT has unknown options {sorted(unknown)}.",
                                      "django_cfkv.E101", f"Known options: {', '.join(sorted(DEFAULTS))}."))
    options = {**DEFAULTS, **raw}
    try:
        options["TRUSTED_PROXIES"] = parse_networks(options["TRUSTED_PROXIES"])
    except ConfigProblem as exc:
        problems.append(exc)
        options["TRUSTED_PROXIES"] = ()
    problems += _option_problems(options)
    rules = []
    specs = options["RULES"]
    if not isinstance(specs, (list, tuple)):
        problems.append(ConfigProblem("CFKV_RATELIMIT['RULES'] must be a list of rules.", "django_cfkv.E102"))
        specs = []
    for index, spec in enumerate(specs):
        try:
            rules.append(compile_rule(spec, index))
        except ConfigProblem as exc:
            problems.append(exc)
    return options, rules, problems


def _option_problems(options):
    problems = []
    for name in ("ENABLED", "FAIL_OPEN"):
        if not isinstance(options[name], bool):
            problems.append(ConfigProblem(f"CFKV_RATELIMIT[{name!r}] must be True or False.",
                                          "django_cfkv.E101"))
    count = options["PROXY_COUNT"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        problems.append(ConfigProblem("CFKV_RATELIMIT['PROXY_COUNT'] must be a whole number >= 0.",
                                      "django_cfkv.E109"))
        options["PROXY_COUNT"] = 0
    header = options["PROXY_HEADER"]
    if header is not None and (not isinstance(header, str) or not header.strip()):
        problems.append(ConfigProblem("CFKV_RATELIMIT['PROXY_HEADER'] must be a header name.",
                                      "django_cfkv.E109"))
        options["PROXY_HEADER"] = None
    elif header and not (options["TRUSTED_PROXIES"] or options["PROXY_COUNT"]):
        problems.append(ConfigProblem(
            f"CFKV_RATELIMIT['PROXY_HEADER'] is {header!r} but no proxy is trusted, so it is ignored.",
            "django_cfkv.E109", 'Set TRUSTED_PROXIES (such as ["cloudflare"]) or PROXY_COUNT.'))
    for name, top in (("IPV4_PREFIX", 32), ("IPV6_PREFIX", 128)):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            problems.append(ConfigProblem(f"CFKV_RATELIMIT[{name!r}] must be a prefix length, 1 to {top}.",
                                          "django_cfkv.E110"))
            options[name] = DEFAULTS[name]
    interval = options["SYNC_INTERVAL"]
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 1:
        problems.append(ConfigProblem("CFKV_RATELIMIT['SYNC_INTERVAL'] must be at least 1 second.",
                                      "django_cfkv.E114", "KV allows one write per second to a key."))
        options["SYNC_INTERVAL"] = DEFAULTS["SYNC_INTERVAL"]
    budget = options["LIST_BUDGET"]
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < math.inf:
        problems.append(ConfigProblem("CFKV_RATELIMIT['LIST_BUDGET'] must be a number of list calls per second, "
                                      ">= 0.", "django_cfkv.E116",
                                      "For example 1 (the default), 0.25, or 0 to never read other processes' counts."))
        options["LIST_BUDGET"] = DEFAULTS["LIST_BUDGET"]
    view = options["VIEW"]
    if view is not None:
        try:
            if not isinstance(view, str):
                raise TypeError(f"it must be the dotted path of a view, not {type(view).__name__}")
            import_string(view)
        except (ImportError, TypeError, ValueError) as exc:
            problems.append(ConfigProblem(f"CFKV_RATELIMIT['VIEW'] cannot be imported: {exc}",
                                          "django_cfkv.E113"))
            options["VIEW"] = None
    return problems


# Shards


def shard_prefix(policy, client, period, index):
    """Return the key prefix shared by every process's shard of one (policy, client, window)."""
    return f"{SHARD_PREFIX}{policy}:{client}:{period}:{index}:"


def describe_shard(name, metadata=None, value=None):
    """Return what a limiter key holds, from its name and metadata (or value), or None if it is not one.

    The dict has ``policy``, ``client`` (hash), ``period``, ``window`` (index),
    ``window_start``, ``window_end`` (epoch seconds), ``process`` (None for a
    strict-mode cache key), ``count`` (None if unknown), ``limit`` and
    ``expired`` (whether the window is over).
    """
    if not name.startswith(SHARD_PREFIX):
        return None
    parts = name[len(SHARD_PREFIX):].rsplit(":", 4)
    if len(parts) == 4:
        parts.append(None)
    if len(parts) != 5 or not (parts[2].isdigit() and parts[3].isdigit()):
        return None
    policy, client, period, index, process = parts[0], parts[1], int(parts[2]), int(parts[3]), parts[4]
    if period < 1:
        return None
    meta = read_metadata(metadata).fields
    count = meta.get("count")
    if count is None and value is not None:
        try:
            count = int(value.decode() if isinstance(value, bytes) else value)
        except (TypeError, ValueError):
            count = None
    _, start, end = window(index * period, period)
    return {"policy": policy, "client": client, "period": period, "window": index, "window_start": start,
            "window_end": end, "process": process, "count": count, "limit": meta.get("limit"),
            "expired": end <= clock.now()}


def _shard_count(metadata):
    count = read_metadata(metadata).fields.get("count")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


class _Shard:
    __slots__ = ("prefix", "key", "end", "limit", "local", "remote", "next_read", "ok", "written_at", "due")

    def __init__(self, prefix, writer, end, limit):
        self.prefix, self.key, self.end, self.limit = prefix, prefix + writer, end, limit
        self.local = self.remote = 0
        self.next_read = self.written_at = float("-inf")
        self.due = clock.monotonic() + FIRST_WRITE_DELAY  # when the background thread first writes it
        self.ok = True


class ShardedCounter:
    """Count on KV with one shard per process; see the module docstring.

    Thread-safe. A daemon thread writes changed shards in the background, so
    no request waits for a write; a request waits for at most one list call,
    and only when its (policy, client) was not read in the last interval and
    the process's ``list_budget`` (list calls per second) is not spent.

    ``per_request=True`` (inside django_cfkv.testing's helpers) takes the clock
    out of the decisions, so a test sees the same calls on every run: each
    (policy, client, window) is read once, on its first request, and
    ``after_request()`` writes what the request changed before it returns,
    with no background thread and no once-per-second spacing.
    """

    def __init__(self, kv, *, interval=1.0, background=True, list_budget=1.0, max_shards=None,
                 per_request=False):
        self.kv = kv
        self.interval = float(interval)
        self.per_request = per_request
        self.background = background and not per_request  # False: only flush() writes (tests, scripts)
        self.list_budget = float(list_budget)
        self.max_shards = MAX_SHARDS if max_shards is None else max_shards
        self.process = secrets.token_hex(4)
        self._serial = itertools.count()  # each shard built gets its own key: see hit()
        self._lock = threading.Condition()
        self._shards = OrderedDict()  # least recently hit first
        self._tokens = self._capacity = max(1.0, self.list_budget) if self.list_budget > 0 else 0.0
        self._tokens_at = clock.monotonic()
        self._dirty = set()
        self._down_until = float("-inf")
        self._logged_at = float("-inf")
        self._thread = None
        self._stop = threading.Event()

    def hit(self, policy, client, limit, period, now):
        """Count one request; return ``(count in window, window end, KV reachable)``."""
        index, _, end = window(now, period)
        prefix = shard_prefix(policy, client, period, index)
        mono = clock.monotonic()
        with self._lock:
            shard = self._shards.get(prefix)
            if shard is None:
                # A new key for every shard built, never the key of one dropped from memory earlier: that
                # key keeps its stored count, and the first read adds it in, so no write lowers a count.
                writer = f"{self.process}.{next(self._serial):x}"
                shard = self._shards[prefix] = _Shard(prefix, writer, end, limit)
                if len(self._shards) > self.max_shards:
                    self._evict(now)
            else:
                self._shards.move_to_end(prefix)
            read = mono >= shard.next_read and mono >= self._down_until and (
                self.per_request or self._take_list_token(mono))
            if read:  # claimed: other threads use the last totals
                shard.next_read = math.inf if self.per_request else mono + self.interval
            elif mono < self._down_until:
                shard.ok = False
        if read:
            self._read(shard)
        with self._lock:
            shard.local += 1
            if shard.local >= MIN_WRITE_COUNT and prefix not in self._dirty:
                self._dirty.add(prefix)
                if self.background:
                    self._start_flusher()
            return shard.local + shard.remote, end, shard.ok

    def _take_list_token(self, mono):
        # Called with the lock held. A token bucket: list_budget calls per second, bursts of max(1, budget).
        self._tokens = min(self._capacity, self._tokens + (mono - self._tokens_at) * self.list_budget)
        self._tokens_at = mono
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _evict(self, now):
        # Called with the lock held, the newest shard last. Of the least recently hit (never the newest),
        # drop one whose window is closed, else the lowest count, one with nothing to write first: a flood
        # of identities that each send a request or two never pushes out a client that sent more.
        victim, lowest = None, None
        for prefix, shard in itertools.islice(self._shards.items(), min(EVICT_SCAN, len(self._shards) - 1)):
            if shard.end <= now:
                victim = prefix
                break
            rank = (shard.local + shard.remote, prefix in self._dirty)
            if lowest is None or rank < lowest:
                victim, lowest = prefix, rank
                if rank <= (1, False):  # a client seen once, nothing to write: none ranks lower
                    break
        if victim is not None:  # None: the newest is the only shard (a cap below 1)
            del self._shards[victim]
            self._dirty.discard(victim)

    def _read(self, shard):
        try:
            page = self.kv.list_keys(prefix=shard.prefix)
        except KVError as exc:
            self._failed(exc, "read")
            with self._lock:
                shard.ok = False
            return
        remote = sum(_shard_count(info.metadata) for info in page.keys if info.name != shard.key)
        with self._lock:
            shard.remote, shard.ok = remote, True

    def after_request(self):
        """Write what the request changed, when counting ``per_request`` (and KV is not known to be down)."""
        if self.per_request and clock.monotonic() >= self._down_until:
            self.flush()

    def flush(self):
        """Write every changed shard of an open window, at most once per interval each (unless
        counting ``per_request``); return how many."""
        now, mono = clock.now(), clock.monotonic()
        with self._lock:
            batch = []
            for prefix in list(self._dirty):
                shard = self._shards.get(prefix)
                if shard is None or shard.end <= now:
                    self._dirty.discard(prefix)
                elif self.per_request or mono >= shard.written_at + self.interval:
                    self._dirty.discard(prefix)
                    shard.written_at = mono
                    shard.due = mono + self.interval
                    batch.append((shard, shard.local))
            for prefix in [p for p, s in self._shards.items() if s.end + TTL_MARGIN <= now]:
                del self._shards[prefix]
        if not batch:
            return 0
        items = [{"key": shard.key, "value": str(count),
                  "expiration_ttl": kv_ttl(shard.end + TTL_MARGIN, now),
                  "metadata": build_metadata(RATELIMIT, expires=shard.end, count=count, limit=shard.limit,
                                             size=len(str(count)))}
                 for shard, count in batch]
        try:
            self.kv.put_many(items)
            failed = ()
        except KVBulkError as exc:
            failed = set(exc.keys) if exc.keys else {item["key"] for item in items}
            self._failed(exc, "write")
        except KVError as exc:
            failed = {item["key"] for item in items}
            self._failed(exc, "write")
        # KV takes one write per second per key, counted from when a write
        # arrives, which is at most when the call returned: space the next from then.
        done = clock.monotonic()
        with self._lock:
            for shard, _ in batch:
                shard.written_at, shard.due = done, done + self.interval
                if shard.key in failed:
                    self._dirty.add(shard.prefix)
        return len(batch) - len(failed)

    def _failed(self, exc, action):
        mono = clock.monotonic()
        # A 429 about one key or call says nothing of the others: only a spent
        # account quota (or an outage) keeps every counter off KV for longer.
        retry_after = getattr(exc, "retry_after", None) if getattr(exc, "account_wide", False) else None
        pause = max(OUTAGE_BACKOFF, float(retry_after or 0))
        with self._lock:
            self._down_until = max(self._down_until, mono + pause)
            log = mono - self._logged_at >= LOG_EVERY
            if log:
                self._logged_at = mono
        if log:
            logger.error("Rate limiting could not %s Workers KV (%s); counting locally for %.0f s.",
                         action, exc, pause)

    def _start_flusher(self):
        # Called with the lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="cfkv-ratelimit-flush", daemon=True)
            self._thread.start()
        self._lock.notify()

    def _run(self):
        while not self._stop.is_set():
            with self._lock:
                while not self._dirty and not self._stop.is_set():
                    self._lock.wait()
                if self._stop.is_set():
                    return  # close() writes what is pending
                due = min((self._shards[p].due for p in self._dirty if p in self._shards), default=0.0)
                delay = max(due, self._down_until) - clock.monotonic()
                if delay > 0:
                    self._lock.wait(min(delay, self.interval * 5))
                    continue
            try:
                self.flush()
            except Exception:  # the thread must outlive any bug
                logger.exception("Rate-limit flush failed.")

    def close(self):
        """Stop counting: end the background thread, then write what is pending before returning,
        so no write lands later (in the next test, or after a reload) unless KV is known to be down."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)  # an in-flight flush finishes; a waiting thread returns at once
        if clock.monotonic() < self._down_until:
            return
        if self.background:  # KV takes one write per second per key: wait (at most an interval) until allowed
            with self._lock:
                ready = max((self._shards[p].written_at + self.interval for p in self._dirty
                             if p in self._shards), default=-math.inf)
            if ready > clock.monotonic():
                clock.sleep(min(ready - clock.monotonic(), self.interval))
        try:
            self.flush()
        except Exception:
            logger.exception("Rate-limit flush failed.")


class CacheCounter:
    """Strict mode: count exactly with a Django cache's atomic ``add`` and ``incr`` (Redis, Memcached)."""

    def __init__(self, cache):
        self.cache = cache

    def hit(self, policy, client, limit, period, now):
        """Count one request; return ``(count in window, window end, True)``."""
        index, _, end = window(now, period)
        key = shard_prefix(policy, client, period, index)[:-1]
        timeout = math.ceil(end - now) + TTL_MARGIN
        if self.cache.add(key, 1, timeout):
            return 1, end, True
        try:
            return self.cache.incr(key), end, True
        except ValueError:  # expired between add and incr
            self.cache.add(key, 1, timeout)
            return 1, end, True


# The limiter


class Usage(NamedTuple):
    """Where one client stands against one policy after a request."""

    policy: str
    limit: int
    period: int
    count: int
    reset: int  # seconds until the window ends
    limited: bool

    @property
    def remaining(self):
        return max(0, self.limit - self.count)


class Limiter:
    """The configured limiter: options, rules and a counter, built from ``CFKV_RATELIMIT``."""

    def __init__(self, raw, *, clock=None):
        self.options, self.rules, problems = compile_settings(raw)
        for problem in problems:
            logger.error("%s (run 'manage.py check' for details; the rule or option is ignored)", problem)
        self.enabled = self.options["ENABLED"] is not False
        self.fail_open = self.options["FAIL_OPEN"] is not False
        self.clock = clock  # a callable returning epoch seconds; None: django_cfkv.clock.now
        self._counter = None
        self._counter_lock = threading.Lock()
        self._logged_at = float("-inf")

    @property
    def counter(self):
        if self._counter is None:
            with self._counter_lock:
                if self._counter is None:
                    self._counter = self._build_counter()
        return self._counter

    def _build_counter(self):
        if self.options["CACHE"]:
            from django.core.cache import caches

            return CacheCounter(caches[self.options["CACHE"]])
        return ShardedCounter(conf.get_kv(self.options["ALIAS"]), interval=self.options["SYNC_INTERVAL"],
                              list_budget=self.options["LIST_BUDGET"], per_request=_per_request)

    def matching(self, path, method):
        """Return the rules that apply to ``method`` on ``path``."""
        return [rule for rule in self.rules if rule.matches(path, method)]

    def _now(self):
        return self.clock() if self.clock is not None else clock.now()

    def client_address(self, meta):
        """Return the client's grouped address from a WSGI environ / ``request.META`` dict."""
        header = self.options["PROXY_HEADER"]
        forwarded = meta.get(meta_name(header)) if header else None
        ip = client_ip(meta.get("REMOTE_ADDR"), forwarded, trusted=self.options["TRUSTED_PROXIES"],
                       hops=self.options["PROXY_COUNT"])
        return group_ip(ip, self.options["IPV4_PREFIX"], self.options["IPV6_PREFIX"])

    def hit(self, rule, identity, now=None):
        """Count one request by ``identity`` against ``rule``; return its Usage.

        Never raises: when the store fails, FAIL_OPEN decides (True: allow,
        still enforcing this process's own count on KV; False: refuse).
        """
        now = self._now() if now is None else now
        try:
            count, end, reachable = self.counter.hit(
                rule.name, client_hash(identity), rule.limit, rule.period, now)
        except Exception as exc:
            self.log_failure(exc)
            count, end, reachable = 0, window(now, rule.period)[2], False
        limited = count > rule.limit or (not reachable and not self.fail_open)
        return Usage(rule.name, rule.limit, rule.period, count, max(1, math.ceil(end - now)), limited)

    def unavailable(self, rule, now=None):
        """Return the Usage for a request that could not be counted (FAIL_OPEN decides)."""
        now = self._now() if now is None else now
        end = window(now, rule.period)[2]
        return Usage(rule.name, rule.limit, rule.period, 0, max(1, math.ceil(end - now)), not self.fail_open)

    def log_failure(self, exc):
        """Log a failure to count, at most once per LOG_EVERY seconds."""
        mono = clock.monotonic()
        if mono - self._logged_at >= LOG_EVERY:
            self._logged_at = mono
            logger.error("Rate limiting failed (%s: %s); FAIL_OPEN=%s.", type(exc).__name__, exc,
                         self.fail_open, exc_info=not isinstance(exc, KVError))

    def after_request(self):
        """Write the request's counts now when the counter works per request (tests); never raises."""
        counter = self._counter
        if counter is not None and hasattr(counter, "after_request"):
            try:
                counter.after_request()
            except Exception as exc:
                self.log_failure(exc)

    def close(self):
        if self._counter is not None and hasattr(self._counter, "close"):
            self._counter.close()


_limiter = None
_limiter_lock = threading.Lock()
_per_request = False


def count_per_request(enabled):
    """Make limiters built from now on count per request (True) or in the background (False).

    django_cfkv.testing turns this on while an override is active, so each
    request's KV calls happen before its response, whatever the clock says;
    the current limiter is forgotten so that the next request builds one so.
    """
    global _per_request
    if _per_request != bool(enabled):
        _per_request = bool(enabled)
        reset_limiter()


def get_limiter():
    """Return the process-wide Limiter for the current settings."""
    global _limiter
    limiter = _limiter
    if limiter is None:
        with _limiter_lock:
            if _limiter is None:
                _limiter = Limiter(conf.setting("CFKV_RATELIMIT"))
            limiter = _limiter
    return limiter


def reset_limiter():
    """Flush and forget the limiter, so the next request reads settings afresh."""
    global _limiter
    with _limiter_lock:
        limiter, _limiter = _limiter, None
    if limiter is not None:
        limiter.close()


def _forget_after_fork():
    # The child must never write under the parent's process id, nor wait on its locks.
    global _limiter, _limiter_lock
    _limiter, _limiter_lock = None, threading.Lock()


conf.on_reset(reset_limiter, settings=("CFKV_RATELIMIT", "CFKV", "CACHES"))
conf.on_reset(_forget_after_fork, after_fork=True)


# The request and response side: identity, counting, the 429 and its headers

def identify(request, rule, limiter):
    """Return the identity ``rule`` counts this request under, or None when the rule does not apply."""
    kind, arg = rule.key, rule.key_arg
    if kind in ("user", "user_or_ip"):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        if kind == "user":
            return None
    if kind in ("ip", "user_or_ip"):
        return "ip:" + limiter.client_address(request.META)
    if kind == "header":
        return f"header:{arg.lower()}:{client_value(request.headers.get(arg, ''))}"
    if kind in ("get", "post"):  # the last value, as request.GET[name] and request.POST[name] give the view
        values = request.GET if kind == "get" else request.POST
        return f"{kind}:{arg}:{client_value(values.get(arg, ''))}"
    value = arg(rule.name, request)
    return None if value is None else f"callable:{value}"


def count_request(request, rules):
    """Count the request against each of ``rules``; return their Usages."""
    limiter = get_limiter()
    usages = []
    for rule in rules:
        try:
            identity = identify(request, rule, limiter)
        except Exception as exc:  # a user's key callable, or a broken request
            limiter.log_failure(exc)
            usages.append(limiter.unavailable(rule))
            continue
        if identity is not None:
            usages.append(limiter.hit(rule, identity))
    limiter.after_request()
    return usages


def check_request(request):
    """Return the Usages of every configured rule matching the request (empty when disabled)."""
    limiter = get_limiter()
    if not limiter.enabled:
        return []
    return count_request(request, limiter.matching(request.path_info, request.method))


def header_values(usages):
    """Return the RateLimit-Policy and RateLimit header values for ``usages``.

    Syntax of draft-ietf-httpapi-ratelimit-headers-10 (section 3 and 4,
    https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/), also what
    Cloudflare's API sends: Structured Field lists of quoted policy names with
    ``q`` (quota) and ``w`` (window, s), and ``r`` (remaining) and ``t`` (seconds to reset).
    """
    return {
        "RateLimit-Policy": ", ".join(f'"{u.policy}";q={u.limit};w={u.period}' for u in usages),
        "RateLimit": ", ".join(f'"{u.policy}";r={u.remaining};t={u.reset}' for u in usages),
    }


def add_headers(response, usages):
    """Add the RateLimit headers for ``usages`` to ``response`` (after any already there)."""
    for name, value in header_values([u for u in usages if u is not None]).items():
        if value:
            if name in response.headers:
                value = f"{response.headers[name]}, {value}"
            response.headers[name] = value
    return response


def limited_response(request, usages, exception=None):
    """Return the answer to a request over its limit: 429 with Retry-After and RateLimit headers.

    ``CFKV_RATELIMIT["VIEW"]`` (a view taking ``(request, exception)``)
    replaces the body; otherwise JSON for clients that prefer it, else a short
    HTML page (template ``django_cfkv/ratelimited.html``).
    """
    limited = [u for u in usages if u.limited] or usages
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


def _default_response(request, retry_after):
    if request.get_preferred_type(["text/html", "application/json"]) == "application/json":
        return JsonResponse({"error": "rate_limited", "detail": "Too many requests. Try again later.",
                             "retry_after": retry_after}, status=429)
    try:
        body = render_to_string("django_cfkv/ratelimited.html", {"retry_after": retry_after})
    except TemplateDoesNotExist:
        body = f"<!doctype html><title>Too many requests</title><h1>Too many requests</h1>" \
               f"<p>Try again in {retry_after} seconds.</p>"
    return HttpResponse(body, status=429)


def limit_view(view, rule, *, block=True):
    """Wrap ``view`` to count each request against ``rule`` (see ``django_cfkv.ratelimit.ratelimit``)."""
    def check(request):
        limiter = get_limiter()
        if not limiter.enabled or not rule.matches(request.path_info, request.method):
            return []
        usages = count_request(request, [rule])
        if any(u.limited for u in usages):
            if block:
                raise Ratelimited("Rate limit exceeded.", usage=usages)
            request.limited = True
        else:
            request.limited = getattr(request, "limited", False)
        return usages

    if iscoroutinefunction(view):
        @wraps(view)
        async def async_wrapper(request, *args, **kwargs):
            usages = await sync_to_async(check)(request)
            return add_headers(await view(request, *args, **kwargs), usages)

        return async_wrapper

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        usages = check(request)
        return add_headers(view(request, *args, **kwargs), usages)

    return wrapper



# The decorator

ALL = None
UNSAFE = ("DELETE", "PATCH", "POST", "PUT")


def ratelimit(rate, key="ip", *, method=ALL, group=None, block=True):
    """Limit a view to ``rate`` requests per ``key``, like django-ratelimit's decorator.

    Over the limit, ``block=True`` raises :class:`~django_cfkv.exceptions.Ratelimited`
    (a ``PermissionDenied``: RateLimitMiddleware answers it with a 429 and
    Retry-After, Django alone with a 403); ``block=False`` sets
    ``request.limited = True`` and calls the view. ``group`` (default: the
    view's dotted name) shares one count between views. Mistakes in the
    arguments raise CFKVConfigurationError (an ImproperlyConfigured) when the module is imported.
    """
    def decorator(view):
        rule = compile_rule({"rate": rate, "key": key, "methods": method, "group": group or view_group(view)})
        return limit_view(view, rule, block=block)

    return decorator


ratelimit.ALL, ratelimit.UNSAFE = ALL, UNSAFE  # as django-ratelimit: @ratelimit(..., method=ratelimit.UNSAFE)
