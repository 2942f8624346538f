"""System checks: configuration mistakes reported by ``manage.py check``, with hints."""

import os
from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Error, Tags, Warning, register

from . import conf, limits
from .exceptions import CFKVConfigurationError
from .transport import checked_token


def config_error(exc: CFKVConfigurationError, id: str | None = None) -> Error:
    """Return the check Error for a configuration error: its text, its id (else ``id``) and its hint."""
    return Error(exc.message, id=exc.id or id, hint=exc.hint)


@register(Tags.compatibility)
def check_cfkv_setting(app_configs: object = None, **kwargs: Any) -> list[CheckMessage]:
    """Check every CFKV alias: backend, credentials, URL, timeouts."""
    try:
        config = conf.get_config()
    except CFKVConfigurationError as exc:
        return [config_error(exc, "django_cfkv.E001")]
    errors: list[CheckMessage] = []
    for alias in config:
        try:
            settings = conf.alias_config(alias)
        except CFKVConfigurationError as exc:
            errors.append(config_error(exc, "django_cfkv.E001"))
            continue
        errors += _check_alias(alias, settings)
    return errors


def _check_alias(alias: str, settings: dict[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    backend = settings["BACKEND"]
    if backend == "cloudflare":
        for name in ("ACCOUNT_ID", "API_TOKEN", "NAMESPACE_ID"):
            if not settings.get(name):
                env = conf.env_var(alias, name)
                errors.append(Error(
                    f"CFKV[{alias!r}] has no {name}.", id="django_cfkv.E002",
                    hint=f"Set CFKV[{alias!r}][{name!r}]" + (f" or the {env} environment variable" if env else "")
                         + ", or use BACKEND 'local' for development.",
                ))
        if settings.get("API_TOKEN"):
            try:
                checked_token(settings["API_TOKEN"])
            except CFKVConfigurationError as exc:
                errors.append(config_error(exc, "django_cfkv.E008"))
        url = urlsplit(str(settings.get("BASE_URL", "")))
        if url.scheme not in ("http", "https") or not url.netloc:
            errors.append(Error(f"CFKV[{alias!r}]['BASE_URL'] is not an http(s) URL.", id="django_cfkv.E003",
                                hint="Leave it unset for Cloudflare, or give the gateway's or emulator's URL "
                                     "ending in /client/v4."))
        elif url.scheme == "http" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
            errors.append(Warning(
                f"CFKV[{alias!r}]['BASE_URL'] sends the API token over plain HTTP to {url.hostname}.",
                id="django_cfkv.W001", hint="Use https:// for anything but a loopback emulator."))
    elif backend == "local":
        errors += _check_local_path(alias, settings)
    elif "." not in str(backend):
        errors.append(Error(f"CFKV[{alias!r}]['BACKEND'] is {backend!r}.", id="django_cfkv.E005",
                            hint="Use 'cloudflare', 'local' or a dotted path to a class with the KV interface."))
    return errors + [config_error(problem) for problem in conf.alias_problems(alias, settings)]


def _check_local_path(alias: str, settings: dict[str, Any]) -> list[CheckMessage]:
    path = settings.get("PATH")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        return [Error(f"CFKV[{alias!r}]['PATH'] is {path!r}, not a file path.", id="django_cfkv.E004",
                      hint="For example PATH = BASE_DIR / 'cfkv.sqlite3'.")]
    errors: list[CheckMessage] = []
    if not os.path.isabs(os.fspath(path)) and conf.setting("BASE_DIR") is None:
        errors.append(Warning(
            f"CFKV[{alias!r}]['PATH'] is the relative path {os.fspath(path)!r}, and no BASE_DIR is set: the store "
            "is opened in whatever folder the server starts in, so another start can open an empty one.",
            id="django_cfkv.W002", hint="Give an absolute PATH, for example PATH = BASE_DIR / 'cfkv.sqlite3'."))
    directory = os.path.dirname(conf.local_path(alias, settings))
    if not os.path.isdir(directory):
        errors.append(Error(f"CFKV[{alias!r}]['PATH'] is in {directory}, which does not exist.",
                            id="django_cfkv.E004", hint="Create the folder or choose another PATH."))
    return errors


@register(Tags.security)
def check_ratelimit_setting(app_configs: object = None, **kwargs: Any) -> list[CheckMessage]:
    """Check CFKV_RATELIMIT: options, rules (rates, regexes, keys), proxies, ALIAS and CACHE."""
    from .ratelimit.options import compile_settings, setting_name

    raw = conf.setting("CFKV_RATELIMIT")
    options, _, problems = compile_settings(raw)
    errors: list[CheckMessage] = [config_error(problem) for problem in problems]
    if not isinstance(raw, dict) or not (raw or options["_from"]):  # django-ratelimit's settings count too
        return errors  # not configured: the defaults are checked when someone configures them
    if options["CACHE"]:
        caches = conf.setting("CACHES")
        if options["CACHE"] not in caches:
            errors.append(Error(f"{setting_name(options, 'CACHE')} is {options['CACHE']!r}, which is not in CACHES.",
                                id="django_cfkv.E112", hint="Name a cache with atomic incr, such as Redis."))
        else:
            errors += _check_strict_cache(options["CACHE"], caches[options["CACHE"]], setting_name(options, "CACHE"))
    else:
        try:
            aliases = conf.get_config()
        except CFKVConfigurationError:
            aliases = {}
        if options["ALIAS"] not in aliases:
            errors.append(Error(f"CFKV_RATELIMIT['ALIAS'] is {options['ALIAS']!r}, not a CFKV alias.",
                                id="django_cfkv.E111", hint=f"Use one of: {', '.join(sorted(aliases))}."))
    return errors


# Caches whose add()/incr() lose counts, so a client sending in parallel, or many new clients, gets past a limit.
LOSES_COUNTS = {
    "django.core.cache.backends.dummy.DummyCache": "stores nothing, so every request counts as the first",
    "django.core.cache.backends.filebased.FileBasedCache": "increments by a read then a write, so parallel "
                                                           "requests lose counts",
    "django.core.cache.backends.db.DatabaseCache": "increments by a read then a write, so parallel requests "
                                                   "lose counts",
    "django_cfkv.cache.CloudflareKVCache": "is a KV cache: KV cannot increment atomically, so parallel requests "
                                           "lose counts",
}
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


def _check_strict_cache(name: str, cache: dict[str, Any], setting: str) -> list[CheckMessage]:
    backend = str(cache.get("BACKEND", ""))
    hint = "Use Redis or Memcached, or leave CACHE unset to count on KV with shards."
    if backend in LOSES_COUNTS:
        return [Error(f"{setting} is {name!r}, which {LOSES_COUNTS[backend]}.",
                      id="django_cfkv.E115", hint=hint)]
    if backend == LOCMEM:
        return [Warning(f"{setting} is {name!r}, a LocMemCache: each process counts alone, and "
                        "past its MAX_ENTRIES (300 by default) new clients push other clients' counts out.",
                        id="django_cfkv.W101", hint=hint)]
    return []


@register(Tags.compatibility)
def check_session_settings(app_configs: object = None, **kwargs: Any) -> list[CheckMessage]:
    """Check the session engine's settings: key layout, value format, load-error policy, user index, user field."""
    from .sessions import FORMATS, LAYOUTS, ON_LOAD_ERROR_CHOICES

    errors: list[CheckMessage] = []
    for name, choices, error_id, hint in (
        ("SESSION_CFKV_KEY_LAYOUT", LAYOUTS, "django_cfkv.E201",
         "Leave it unset for 'hashed'; 'plain' puts every session id in a key name anyone who can list "
         "the namespace can use."),
        ("SESSION_CFKV_FORMAT", FORMATS, "django_cfkv.E202",
         "'signed' for Django alone, 'json' to share sessions with Workers."),
        ("SESSION_CFKV_ON_LOAD_ERROR", ON_LOAD_ERROR_CHOICES, "django_cfkv.E203",
         "'empty' serves an anonymous session while KV cannot be reached; 'raise' lets the error through."),
    ):
        value = conf.setting(name)
        if value not in choices:
            errors.append(Error(f"{name} is {value!r}; use one of: {', '.join(map(repr, choices))}.",
                                id=error_id, hint=hint))
    errors += _check_session_alias() + _check_session_numbers()
    prefix = conf.setting("SESSION_CFKV_KEY_PREFIX")
    if not isinstance(prefix, str) or not prefix or len(prefix.encode()) > 128:
        errors.append(Error(f"SESSION_CFKV_KEY_PREFIX is {prefix!r}; it must be text of 1 to 128 bytes.",
                            id="django_cfkv.E207",
                            hint="Leave it unset for 'session:', the prefix Workers session code reads."))
    errors += _check_user_index()
    field = conf.setting("SESSION_CFKV_USER_FIELD")
    if field != "pk":
        from django.contrib.auth import get_user_model
        from django.core.exceptions import FieldDoesNotExist

        hint = "Use 'pk', or a unique field that cannot be null (a custom user model's email, say)."
        meta = get_user_model()._meta
        try:
            user_field = meta.get_field(field)
        except (FieldDoesNotExist, TypeError):
            errors.append(Error(f"SESSION_CFKV_USER_FIELD is {field!r}, which is not a field of the user model.",
                                id="django_cfkv.E204", hint=hint))
        else:
            # Users sharing a value (several users without an email, say) would share one index of sessions:
            # listing or signing out one would list or sign out the others. Unique as Django's auth.E003 takes it.
            unique = getattr(user_field, "unique", False) or any(
                constraint.fields == (field,) for constraint in meta.total_unique_constraints)
            shared = not unique or getattr(user_field, "null", True)
            if shared and conf.setting("SESSION_CFKV_USER_INDEX") is not False:  # without the index, no harm
                errors.append(Error(
                    f"SESSION_CFKV_USER_FIELD is {field!r}, which several users may share (the field is not "
                    "unique, or may be null): each user's sessions are indexed under its value.",
                    id="django_cfkv.E204", hint=hint))
    return errors


def _sessions_in_kv() -> bool:
    """Return True if sessions live in KV: SESSION_ENGINE is a KV engine, or bearer tokens are used."""
    from .middleware import BearerSessionMiddleware
    from .sessions.tokens import engine_session_store

    if conf.middleware_position(list(conf.setting("MIDDLEWARE") or ()), BearerSessionMiddleware) is not None:
        return True
    try:
        engine_session_store()
    except (ImportError, CFKVConfigurationError):
        return False
    return True


def _check_session_alias() -> list[CheckMessage]:
    alias = conf.setting("SESSION_CFKV_ALIAS")
    if not (conf.is_set("SESSION_CFKV_ALIAS") or _sessions_in_kv()):
        return []  # sessions are elsewhere: the default alias need not exist
    try:
        aliases = conf.get_config()
    except CFKVConfigurationError:
        return []  # E001 says what is wrong with CFKV
    if not isinstance(alias, str) or alias not in aliases:
        return [Error(f"SESSION_CFKV_ALIAS is {alias!r}, which is not a CFKV alias, so every request that "
                      "uses the session fails.", id="django_cfkv.E206",
                      hint=f"Use one of: {', '.join(map(repr, sorted(aliases)))}, or add CFKV[{alias!r}].")]
    return []


def _check_session_numbers() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name, error_id, hint in (
        ("SESSION_CFKV_REFRESH_INTERVAL", "django_cfkv.E208",
         "Seconds between two writes that only move a session's expiry; leave it unset for 60."),
        ("SESSION_CFKV_NEAR_CACHE_TIMEOUT", "django_cfkv.E209",
         "Seconds a process may serve a session from memory; 0 (the default) turns it off."),
    ):
        value = conf.setting(name)
        if not limits.is_seconds(value, zero_ok=True):
            errors.append(Error(f"{name} is {value!r}; it must be a number of seconds >= 0.", id=error_id,
                                hint=hint))
    return errors


def _check_user_index() -> list[CheckMessage]:
    from .sessions.options import user_index

    try:
        on = user_index()
    except CFKVConfigurationError as exc:
        return [config_error(exc)]
    if on and conf.setting("SESSION_CFKV_KEY_LAYOUT") == "plain":
        return [Warning("SESSION_CFKV_KEY_LAYOUT is 'plain', so sessions are not indexed by user: user_sessions(), "
                        "the revoke_*() functions, the sessions page and the admin's 'Sign out everywhere' refuse "
                        "to work.", id="django_cfkv.W201",
                        hint="Move sessions to the hashed layout (manage.py cfkv migrate-sessions), or set "
                             "SESSION_CFKV_USER_INDEX = False to say you do without.")]
    return []


# Caches

CACHE_BACKEND = "django_cfkv.cache.CloudflareKVCache"


@register(Tags.caches)
def check_caches(app_configs: object = None, **kwargs: Any) -> list[CheckMessage]:
    """Check every CloudflareKVCache in CACHES: its LOCATION names a CFKV alias, its OPTIONS are known and valid."""
    from .cache import options

    errors: list[CheckMessage] = []
    caches = conf.setting("CACHES")
    for name, params in caches.items() if isinstance(caches, dict) else ():
        if not isinstance(params, dict) or params.get("BACKEND") != CACHE_BACKEND:
            continue
        alias = params.get("LOCATION") or "default"
        try:
            aliases = conf.get_config()
        except CFKVConfigurationError:
            aliases = None  # E001 says what is wrong with CFKV
        if aliases is not None and (not isinstance(alias, str) or alias not in aliases):
            errors.append(Error(
                f"CACHES[{name!r}]['LOCATION'] is {alias!r}, which is not a CFKV alias, so every use of the "
                "cache fails.", id="django_cfkv.E301",
                hint=f"LOCATION names the CFKV alias the cache lives in: one of "
                     f"{', '.join(map(repr, sorted(aliases)))}, or add CFKV[{alias!r}]."))
        try:
            options.parse(params)
        except CFKVConfigurationError as exc:
            errors.append(Error(f"CACHES[{name!r}]: {exc.message}", id=exc.id or "django_cfkv.E302", hint=exc.hint))
    return errors


# Middleware order

AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.compatibility)
def check_middleware_order(app_configs: object = None, **kwargs: Any) -> list[CheckMessage]:
    """Check that BearerSessionMiddleware follows SessionMiddleware, and RateLimitMiddleware follows
    AuthenticationMiddleware when a rule keys on the user. Entries are compared by class, so a subclass
    (django_cfkv.sessions.middleware.SessionMiddleware, a site's own RateLimitMiddleware) or another import
    path of the same class counts as what it is."""
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.contrib.sessions.middleware import SessionMiddleware

    from .middleware import BearerSessionMiddleware, RateLimitMiddleware

    middleware = list(conf.setting("MIDDLEWARE") or ())
    session, auth, bearer, limiter = (conf.middleware_position(middleware, cls) for cls in (
        SessionMiddleware, AuthenticationMiddleware, BearerSessionMiddleware, RateLimitMiddleware))
    errors: list[CheckMessage] = []
    if bearer is not None and session is not None and bearer < session:
        errors.append(Error(
            "BearerSessionMiddleware comes before SessionMiddleware, which then replaces the bearer token's "
            "session with the cookie's: every bearer token is ignored.", id="django_cfkv.E401",
            hint=f"In MIDDLEWARE, put {middleware[bearer]!r} right after {middleware[session]!r}."))
    if limiter is not None and (auth is None or limiter < auth):
        errors += _check_user_keys(middleware[limiter], None if auth is None else middleware[auth])
    return errors


def _check_user_keys(limiter: str, auth: str | None) -> list[CheckMessage]:
    from .ratelimit import compile_settings

    _, rules, _ = compile_settings(conf.setting("CFKV_RATELIMIT"))
    kinds = {rule.key for rule in rules}
    hint = f"In MIDDLEWARE, put {limiter!r} after {auth or AUTH_MIDDLEWARE!r}."
    where = "runs before AuthenticationMiddleware" if auth else "runs without AuthenticationMiddleware"
    if "user" in kinds:
        return [Error(f"RateLimitMiddleware {where}, so no request has a user yet: rules with key 'user' count "
                      "nothing.", id="django_cfkv.E402", hint=hint)]
    if "user_or_ip" in kinds:
        return [Warning(f"RateLimitMiddleware {where}, so no request has a user yet: rules with key "
                        "'user_or_ip' count signed-in users by their address.", id="django_cfkv.W402", hint=hint)]
    return []
