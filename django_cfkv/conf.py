"""The only reader of settings: ``CFKV`` aliases, their defaults and env fallbacks,
django-cfkv's flat settings and the few of Django's it needs.

Other modules ask here for what they need. Process state built from settings
(pooled clients, near caches, the limiter, sessions deleted here) is forgotten
in one place: modules register what to forget with :func:`on_reset`, and this
module's one ``setting_changed`` receiver and one fork hook run them, so
``override_settings`` takes effect and a child process starts clean.
"""

import functools
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from . import client, limits, local, threads, transport
from .exceptions import CFKVConfigurationError

BACKENDS = ("cloudflare", "local")

# The client's and the store's own defaults: each is written once, where it is used.
ALIAS_DEFAULTS: dict[str, Any] = {
    "BACKEND": "cloudflare",
    "BASE_URL": client.DEFAULT_BASE_URL,
    "TIMEOUT": transport.DEFAULT_TIMEOUT,
    "MAX_RETRIES": transport.DEFAULT_MAX_RETRIES,
    "DEADLINE": transport.DEFAULT_DEADLINE,
    "PATH": "cfkv.sqlite3",
    "BUSY_TIMEOUT": local.DEFAULT_BUSY_TIMEOUT,
}

# Environment fallbacks, under the names wrangler and Cloudflare's SDK use.
ENV_FALLBACKS = {
    "ACCOUNT_ID": "CLOUDFLARE_ACCOUNT_ID",
    "API_TOKEN": "CLOUDFLARE_API_TOKEN",
    "BASE_URL": "CLOUDFLARE_BASE_URL",
}
NAMESPACE_ENV = "CFKV_NAMESPACE_ID"  # the default alias only: one id cannot serve two aliases

# Flat settings read by the session engine, the limiter and friends, with defaults.
SETTING_DEFAULTS: dict[str, Any] = {
    "SESSION_CFKV_ALIAS": "default",
    "SESSION_CFKV_FORMAT": "signed",
    "SESSION_CFKV_KEY_PREFIX": "session:",
    "SESSION_CFKV_KEY_LAYOUT": "hashed",
    "SESSION_CFKV_REFRESH_INTERVAL": 60,
    "SESSION_CFKV_ON_LOAD_ERROR": "empty",
    "SESSION_CFKV_USER_FIELD": "pk",
    "SESSION_CFKV_NEAR_CACHE_TIMEOUT": 0,
    "SESSION_CFKV_USER_INDEX": True,
    "CFKV_RATELIMIT": {},
    # The project's folder, as startproject's settings name it: a relative local PATH is taken from there.
    "BASE_DIR": None,
    # django-redis' settings, read by the cache with their meanings (None: not set).
    "DJANGO_REDIS_IGNORE_EXCEPTIONS": None,
    "DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS": None,
    "DJANGO_REDIS_LOGGER": None,
    # django-ratelimit's settings, read by the rate limiter with their meanings (None: not set).
    **dict.fromkeys(("RATELIMIT_ENABLE", "RATELIMIT_USE_CACHE", "RATELIMIT_VIEW", "RATELIMIT_FAIL_OPEN",
                     "RATELIMIT_IP_META_KEY", "RATELIMIT_IPV4_MASK", "RATELIMIT_IPV6_MASK",
                     "RATELIMIT_EXCEPTION_CLASS"), None),
}

# Django's own settings that django-cfkv reads (Django gives each a default).
DJANGO_SETTINGS = frozenset({
    "AUTHENTICATION_BACKENDS", "CACHES", "MIDDLEWARE", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "SESSION_ENGINE",
    "SESSION_SERIALIZER",
    # Read by sessions.middleware.SessionMiddleware, as Django's reads them.
    "SESSION_COOKIE_NAME", "SESSION_COOKIE_PATH", "SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_SAMESITE",
    "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_SAVE_EVERY_REQUEST",
})


def is_set(name: str) -> bool:
    """Return True if the project's settings give ``name`` (rather than leaving it to its default)."""
    return hasattr(django_settings, name)


def setting(name: str) -> Any:
    """Return a flat django-cfkv setting (or its default), or one of Django's settings it reads."""
    if name in SETTING_DEFAULTS:
        return getattr(django_settings, name, SETTING_DEFAULTS[name])
    if name in DJANGO_SETTINGS:
        return getattr(django_settings, name)
    raise KeyError(f"{name} is not a setting django-cfkv reads; add it to conf.SETTING_DEFAULTS or "
                   "conf.DJANGO_SETTINGS.")


def middleware_position(middleware: list[str], cls: type) -> int | None:
    """Return the index of the first MIDDLEWARE entry that is ``cls`` or a subclass (None if there is none)."""
    for index, path in enumerate(middleware):
        try:
            entry = import_string(path)
        except ImportError:  # Django's own check reports a path that does not import
            continue
        if isinstance(entry, type) and issubclass(entry, cls):
            return index
    return None


@functools.cache
def get_config() -> dict[str, Any]:
    """Return ``settings.CFKV``; with no such setting, one "default" alias from the environment."""
    config = getattr(django_settings, "CFKV", None)
    if config is None:
        config = {"default": {}}
    if not isinstance(config, dict):
        raise CFKVConfigurationError("CFKV must be a dict of aliases, like DATABASES: {'default': {...}}.",
                                     "django_cfkv.E001", "CFKV = {'default': {'BACKEND': 'local'}}")
    return config


def alias_config(alias: str) -> dict[str, Any]:
    """Return one alias' settings merged with defaults and environment fallbacks."""
    config = get_config()
    if alias not in config:
        raise CFKVConfigurationError(
            f"The CFKV alias {alias!r} is not configured. Add CFKV[{alias!r}] to your settings "
            f"(configured: {', '.join(sorted(config)) or 'none'}).", "django_cfkv.E001"
        )
    raw = config[alias]
    if not isinstance(raw, dict):
        raise CFKVConfigurationError(f"CFKV[{alias!r}] must be a dict of settings.", "django_cfkv.E001")
    merged = dict(ALIAS_DEFAULTS)
    for name in (*ENV_FALLBACKS, "NAMESPACE_ID"):
        env = env_var(alias, name)
        if env and os.environ.get(env):
            merged[name] = os.environ[env]
    merged.update(raw)
    return merged


def env_var(alias: str, name: str) -> str | None:
    """Return the environment variable that fills ``name`` in for ``alias``, if one does."""
    return ENV_FALLBACKS.get(name) or (NAMESPACE_ENV if name == "NAMESPACE_ID" and alias == "default" else None)


def local_path(alias: str, config: dict[str, Any]) -> str:
    """Return a local alias' PATH as an absolute path: a relative one is taken from BASE_DIR, if set."""
    path = os.fspath(config["PATH"])
    base = setting("BASE_DIR")
    if not os.path.isabs(path) and base is not None:
        path = os.path.join(os.fspath(base), path)
    return os.path.abspath(path)


def alias_problems(alias: str, config: dict[str, Any]) -> list[CFKVConfigurationError]:
    """Return what is wrong with an alias' numbers (TIMEOUT, DEADLINE, BUSY_TIMEOUT, MAX_RETRIES), each with
    its check id and hint: they would otherwise reach requests or SQLite and fail on every call."""
    problems = []
    timeout = config.get("TIMEOUT")
    values = tuple(timeout) if isinstance(timeout, (tuple, list)) else (timeout, timeout)
    if len(values) != 2 or not all(limits.is_seconds(v) for v in values):
        problems.append(CFKVConfigurationError(
            f"CFKV[{alias!r}]['TIMEOUT'] must be seconds > 0 or a (connect, read) pair, not {timeout!r}.",
            "django_cfkv.E006", "For example TIMEOUT = 10 or TIMEOUT = (5, 30): numbers, not strings."))
    for name, example, error_id in (("DEADLINE", 30, "django_cfkv.E009"), ("BUSY_TIMEOUT", 5, "django_cfkv.E010")):
        if not limits.is_seconds(config.get(name)):
            problems.append(CFKVConfigurationError(
                f"CFKV[{alias!r}][{name!r}] must be a number of seconds > 0, not {config.get(name)!r}.",
                error_id, f"For example {name} = {example}, or leave it unset for the default."))
    retries = config.get("MAX_RETRIES")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        problems.append(CFKVConfigurationError(
            f"CFKV[{alias!r}]['MAX_RETRIES'] must be a whole number >= 0, not {retries!r}.", "django_cfkv.E007",
            "For example MAX_RETRIES = 2, or leave it unset for the default."))
    return problems


def build_kv(alias: str) -> Any:
    """Build a new client or store for ``alias``; CFKVConfigurationError says what is missing."""
    config = alias_config(alias)
    backend = config["BACKEND"]
    if backend in BACKENDS:
        problems = alias_problems(alias, config)
        if problems:
            raise problems[0]
    if backend == "cloudflare":
        missing = [n for n in ("ACCOUNT_ID", "NAMESPACE_ID", "API_TOKEN") if not config.get(n)]
        if missing:
            hints = ", ".join(n + (f" (or ${env})" if (env := env_var(alias, n)) else "") for n in missing)
            raise CFKVConfigurationError(f"CFKV[{alias!r}] needs {hints} to reach Cloudflare.", "django_cfkv.E002")
        return client.KVClient(
            config["ACCOUNT_ID"], config["NAMESPACE_ID"], config["API_TOKEN"],
            base_url=config["BASE_URL"], timeout=config["TIMEOUT"], max_retries=config["MAX_RETRIES"],
            deadline=config["DEADLINE"],
        )
    if backend == "local":
        return local.LocalKV(local_path(alias, config), namespace=config.get("NAMESPACE_ID") or "",
                             busy_timeout=config["BUSY_TIMEOUT"])
    try:
        cls = import_string(backend)
    except ImportError as exc:
        raise CFKVConfigurationError(
            f"CFKV[{alias!r}]['BACKEND'] is {backend!r}: use 'cloudflare', 'local' or the dotted "
            "path of a class with the KV interface.", "django_cfkv.E005"
        ) from exc
    kv = cls(**config.get("OPTIONS", {}))
    # The faces await every KV object; one whose class has no async twins gets them, run in threads.
    return kv if hasattr(kv, "aget") else threads.InThreads(kv)


_instances: dict[str, Any] = {}
_instances_lock = threading.Lock()


def get_kv(alias: str = "default") -> Any:
    """Return the process-wide KV object for ``alias``, building it on first use."""
    kv = _instances.get(alias)
    if kv is None:
        with _instances_lock:
            kv = _instances.get(alias)
            if kv is None:
                kv = _instances[alias] = build_kv(alias)
    return kv


async def aget_kv(alias: str = "default") -> Any:
    """As :func:`get_kv`, from async code: a first use builds the object in a worker thread (a LocalKV
    opens its SQLite file there), never on the event loop."""
    kv = _instances.get(alias)
    return kv if kv is not None else await threads.run(get_kv, alias)


def reset() -> None:
    """Forget built clients (closing their connections) and re-read settings."""
    get_config.cache_clear()
    with _instances_lock:
        for kv in _instances.values():
            close = getattr(kv, "close", None)
            if close:
                close()
        _instances.clear()


# Resetting process state

_on_settings: list[tuple[Callable[[], None], tuple[str, ...]]] = []
_on_fork: list[Callable[[], None]] = []


def on_reset(callback: Callable[[], None], *, settings: Iterable[str] = (), after_fork: bool = False) -> None:
    """Call ``callback()`` to forget process state when a setting it depends on changes, or after a fork.

    ``settings`` names the settings (a name ending in ``*`` stands for every
    setting it starts); with ``after_fork`` it also runs in a child process
    right after a fork, where it must not wait on locks the parent held (make
    new ones) nor write on the parent's behalf. Callbacks run in the order
    they were registered; the clients built here are closed after them, so
    one may still flush through its client.
    """
    names = tuple(settings)
    if names:
        _on_settings.append((callback, names))
    if after_fork:
        _on_fork.append(callback)


def _matches(setting_name: str, names: tuple[str, ...]) -> bool:
    return any(setting_name.startswith(n[:-1]) if n.endswith("*") else setting_name == n for n in names)


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    for callback, names in list(_on_settings):
        if _matches(setting, names):
            callback()
    if setting == "CFKV":
        reset()


def _after_fork_in_child() -> None:
    global _instances_lock
    _instances_lock = threading.Lock()  # another thread of the parent may have held it
    for callback in list(_on_fork):
        callback()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_cfkv.conf")
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
