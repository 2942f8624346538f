"""The ``CFKV_RATELIMIT`` setting: its options, their defaults, and every mistake in them.

:func:`compile_settings` is the one place the setting's dict is read and
checked; the limiter runs on what it returns, and ``manage.py check`` reports
what it found wrong (each a CFKVConfigurationError with a check id and hint).
A wrong option falls back to its default, and a wrong rule is left out, so a
mistake is reported rather than turning requests into 500s.

django-ratelimit's ``RATELIMIT_*`` settings are read here too, with its
meanings (:data:`PEER_SETTINGS`), so a site moving over keeps its settings; an
option set in ``CFKV_RATELIMIT`` wins over them.
"""

import math
from typing import Any

from django.utils.module_loading import import_string

from .. import conf
from .identity import parse_networks
from .rules import ConfigProblem, Rule, compile_rule

DEFAULTS: dict[str, Any] = {
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

#: django-ratelimit's settings and the option each sets (when CFKV_RATELIMIT does not).
PEER_SETTINGS = {
    "RATELIMIT_ENABLE": "ENABLED",
    "RATELIMIT_USE_CACHE": "CACHE",  # a CloudflareKVCache sets ALIAS instead: see _peer_options()
    "RATELIMIT_VIEW": "VIEW",
    "RATELIMIT_FAIL_OPEN": "FAIL_OPEN",
    "RATELIMIT_IPV4_MASK": "IPV4_PREFIX",
    "RATELIMIT_IPV6_MASK": "IPV6_PREFIX",
    "RATELIMIT_IP_META_KEY": "IP_META_KEY",
    "RATELIMIT_EXCEPTION_CLASS": "EXCEPTION_CLASS",
}
# Options only django-ratelimit's settings give (CFKV_RATELIMIT has better ways: PROXY_HEADER, the 429).
PEER_ONLY = {"IP_META_KEY": None, "EXCEPTION_CLASS": None}
KV_CACHE = "django_cfkv.cache.CloudflareKVCache"


def setting_name(options: dict[str, Any], option: str) -> str:
    """Return the setting an option came from: ``CFKV_RATELIMIT['X']`` or django-ratelimit's ``RATELIMIT_X``."""
    return options.get("_from", {}).get(option) or f"CFKV_RATELIMIT[{option!r}]"


def compile_settings(raw: object) -> tuple[dict[str, Any], list[Rule], list[ConfigProblem]]:
    """Return ``(options, rules, problems)``: merged options, valid rules, and every ConfigProblem."""
    if not isinstance(raw, dict):
        return {**DEFAULTS, **PEER_ONLY}, [], [ConfigProblem("CFKV_RATELIMIT must be a dict.", "django_cfkv.E101")]
    problems = []
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        problems.append(ConfigProblem(f"CFKV_RATELIMIT has unknown options {sorted(unknown)}.",
                                      "django_cfkv.E101", f"Known options: {', '.join(sorted(DEFAULTS))}."))
    options = {**DEFAULTS, **PEER_ONLY, **_peer_options(raw), **raw}
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


def _peer_options(raw: dict[str, Any]) -> dict[str, Any]:
    # django-ratelimit's settings that are set, as options; "_from" remembers their names for messages.
    options: dict[str, Any] = {}
    origin = {}
    for name, option in PEER_SETTINGS.items():
        value = conf.setting(name)
        if value is None or option in raw:
            continue
        if option == "CACHE":
            cache = conf.setting("CACHES").get(value)
            if isinstance(cache, dict) and cache.get("BACKEND") == KV_CACHE:
                if "ALIAS" not in raw:  # a cache on KV: count on its namespace with shards, never by incr
                    options["ALIAS"] = cache.get("LOCATION") or "default"
                    origin["ALIAS"] = name
                continue
        options[option] = value
        origin[option] = name
    options["_from"] = origin
    return options


def _option_problems(options: dict[str, Any]) -> list[ConfigProblem]:
    # Each check puts a wrong option back to a value the limiter can run on.
    problems = []
    for name in ("ENABLED", "FAIL_OPEN"):
        if not isinstance(options[name], bool):
            problems.append(ConfigProblem(f"{setting_name(options, name)} must be True or False.",
                                          "django_cfkv.E101"))
    return (problems + _proxy_problems(options) + _number_problems(options) + _view_problems(options)
            + _peer_problems(options))


def _proxy_problems(options: dict[str, Any]) -> list[ConfigProblem]:
    problems = []
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
            problems.append(ConfigProblem(f"{setting_name(options, name)} must be a prefix length, 1 to {top}.",
                                          "django_cfkv.E110"))
            options[name] = DEFAULTS[name]
    return problems


def _number_problems(options: dict[str, Any]) -> list[ConfigProblem]:
    problems = []
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
    return problems


def _view_problems(options: dict[str, Any]) -> list[ConfigProblem]:
    view = options["VIEW"]
    if view is None:
        return []
    try:
        if not isinstance(view, str):
            raise TypeError(f"it must be the dotted path of a view, not {type(view).__name__}")
        import_string(view)
    except (ImportError, TypeError, ValueError) as exc:
        options["VIEW"] = None
        return [ConfigProblem(f"{setting_name(options, 'VIEW')} cannot be imported: {exc}", "django_cfkv.E113")]
    return []


def _peer_problems(options: dict[str, Any]) -> list[ConfigProblem]:
    # RATELIMIT_IP_META_KEY and RATELIMIT_EXCEPTION_CLASS: a META key, or what a dotted path names.
    problems = []
    for option, kind in (("IP_META_KEY", "a request.META key, a callable(request) or its dotted path"),
                         ("EXCEPTION_CLASS", "an exception class or its dotted path")):
        value = options[option]
        if value is None or callable(value) or (option == "IP_META_KEY" and isinstance(value, str)
                                                 and "." not in value and value):
            continue
        try:
            if not isinstance(value, str):
                raise TypeError(f"it is {type(value).__name__}")
            imported = import_string(value)
            if option == "EXCEPTION_CLASS" and not (isinstance(imported, type) and issubclass(imported,
                                                                                              BaseException)):
                raise TypeError("it is not an exception class")
        except (ImportError, TypeError, ValueError) as exc:
            options[option] = PEER_ONLY[option]
            problems.append(ConfigProblem(f"{setting_name(options, option)} must be {kind}: {exc}",
                                          "django_cfkv.E117"))
    return problems
