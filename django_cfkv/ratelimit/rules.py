"""Rates and rules: what ``"5/m"`` means, and which rule counts a request under which key.

A rule is compiled once (from ``CFKV_RATELIMIT["RULES"]`` or a decorator's
arguments) into a :class:`Rule`; every mistake is a CFKVConfigurationError
naming the check id that reports it, so ``manage.py check`` catches it before
traffic does.
"""

import hashlib
import inspect
import re
from collections.abc import Collection
from re import Pattern
from typing import Any, NamedTuple

from django.utils.module_loading import import_string

from ..exceptions import CFKVConfigurationError

#: One mistake in ``CFKV_RATELIMIT``: the package's configuration error, with the check id that reports it.
ConfigProblem = CFKVConfigurationError

RULE_FIELDS = {"path", "methods", "rate", "key", "group"}
SIMPLE_KEYS = ("ip", "user", "user_or_ip")
PREFIXED_KEYS = ("header", "get", "post")  # django-ratelimit's spelling: request.GET / request.POST
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# "<count>/<multiplier><unit>", as django-ratelimit writes rates; no unit means seconds ("100/10").
_RATE_RE = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]*)\s*([smhd]?)\s*$")  # ASCII digits: \d takes "೦"
_GROUP_RE = re.compile(r"^[\w.\-/]{1,100}$")
RATE_HINT = ('Write "<count>/<period>": "5/m", "100/10m", "1000/h", "10/s", "50000/d" or "100/10" (seconds), '
             "a (count, seconds) tuple, or a callable(group, request) returning one.")


# Rates


def parse_rate(rate: object) -> tuple[int, int]:
    """Return ``(limit, period_seconds)`` for a rate: ``"5/m"``, ``"100/10m"``, ``"100/10"`` (seconds),
    or a ``(count, seconds)`` tuple, as django-ratelimit reads them. A limit of 0 refuses every request."""
    if isinstance(rate, tuple) and len(rate) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) for n in rate) and rate[0] >= 0 and rate[1] >= 1:
        return rate[0], rate[1]
    match = _RATE_RE.match(rate) if isinstance(rate, str) else None
    if not match or (not match.group(2) and not match.group(3)) or match.group(2).startswith("0"):
        raise ConfigProblem(f"Invalid rate {rate!r}.", "django_cfkv.E104", RATE_HINT)
    return int(match.group(1)), int(match.group(2) or 1) * UNITS[match.group(3) or "s"]


def looks_like_rate(value: object) -> bool:
    """Return whether ``value`` reads as a rate ("5/m", "5/minute"): a rate given where a group or key goes."""
    return isinstance(value, str) and re.match(r"^\s*[0-9]+\s*/", value) is not None


def plain_callable(func: Any, what: str, check_id: str) -> Any:
    """Return ``func`` unless it is an ``async def``: keys and rates are computed by plain calls (in a thread
    under ASGI, where they may query the database), and a coroutine would be counted, not awaited."""
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__):  # or such an object
        raise ConfigProblem(f"The rate-limit {what} {getattr(func, '__qualname__', func)!r} is an async function.",
                            check_id, "Write it as a plain def: it is called in a thread in an async stack.")
    return func


# Rules


class Rule(NamedTuple):
    """One compiled rule; ``name`` is its policy name in KV keys and headers."""

    name: str
    limit: int
    period: int
    path: Pattern[str] | None  # None for the decorator: every path
    methods: frozenset[str]  # empty: every method
    key: str  # "ip", "user", "user_or_ip", "header", "get", "post" or "callable"
    key_arg: Any  # header or field name, or the callable

    def matches(self, path: str, method: str) -> bool:
        """Return whether the rule applies to a request for ``path`` with ``method``."""
        if self.methods and method.upper() not in self.methods:
            return False
        return self.path is None or self.path.search(path) is not None

    @property
    def partition(self) -> str:
        """What splits one group's counts besides the client, as django-ratelimit splits them: the rate and
        the methods (stacked rules for GET and for POST on one view, or two rates in one group, never share)."""
        return f"{self.limit}/{self.period}:{','.join(sorted(self.methods))}"


def compile_key(key: object) -> tuple[str, Any]:
    """Return ``(kind, argument)`` for a rule's key; import a dotted-path callable."""
    if looks_like_rate(key):  # a rate where the key goes: say what is wrong with it as a rate
        parse_rate(key)
        raise ConfigProblem(f"The rate-limit key {key!r} is a rate.", "django_cfkv.E104",
                            f"Give it as rate={key!r} and the key as key=, such as key='ip'.")
    if callable(key):
        return "callable", plain_callable(key, "key", "django_cfkv.E105")
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
                return "callable", plain_callable(func, "key", "django_cfkv.E105")
    if key is None:
        raise ConfigProblem("A rate-limit rule needs a key.", "django_cfkv.E105",
                            'Give key= as "ip", "user", "user_or_ip", "header:<name>", "get:<name>", '
                            '"post:<name>" or a callable(group, request) returning a string.')
    raise ConfigProblem(f"Invalid rate-limit key {key!r}.", "django_cfkv.E105",
                        'Use "ip", "user", "user_or_ip", "header:<name>", "get:<name>", "post:<name>" or '
                        "the dotted path of a callable(group, request) returning a string.")


def compile_rule(spec: object, index: int | None = None) -> Rule:
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
    methods = _methods(spec.get("methods") or (), where)
    kind, arg = compile_key(spec.get("key", "ip"))
    group = spec.get("group")
    if group is None:
        group = _default_group(path, methods, spec["rate"], spec.get("key", "ip"))
    elif not isinstance(group, str) or not _GROUP_RE.match(group):
        raise ConfigProblem(f"{where} has an invalid group {group!r}.", "django_cfkv.E107",
                            "Use 1 to 100 letters, digits, '_', '-', '.' or '/'.")
    upper = {m.upper() for m in methods}
    if "GET" in upper:  # Django answers HEAD with the GET view: a GET limit that skipped HEAD would not hold
        upper.add("HEAD")
    return Rule(group, limit, period, regex, frozenset(upper), kind, arg)


def _methods(methods: object, where: str) -> Collection[str]:
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, (list, tuple, set, frozenset)) or not all(isinstance(m, str) for m in methods):
        raise ConfigProblem(f"{where} has invalid methods {methods!r}.", "django_cfkv.E106",
                            'Use a list of HTTP methods, such as ["POST"], or leave it out for all.')
    return methods


def _default_group(path: object, methods: Collection[str], rate: object, key: object) -> str:
    # The same in every process, so that they share one count: a hash of what the rule says.
    if callable(key):  # its repr holds an address, which differs in every process
        key = f"{getattr(key, '__module__', None)}.{getattr(key, '__qualname__', type(key).__qualname__)}"
    digest = hashlib.sha256(repr((path, sorted(methods), rate, key)).encode())
    return "r" + digest.hexdigest()[:10]

