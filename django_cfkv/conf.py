"""The only reader of settings: ``CFKV`` aliases, their defaults and env fallbacks.

Other modules ask here for what they need. The caches below are cleared when
a test changes a setting (``override_settings``), so changes take effect.
"""

import functools
import os
import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .exceptions import CFKVConfigurationError

BACKENDS = ("cloudflare", "local")

ALIAS_DEFAULTS = {
    "BACKEND": "cloudflare",
    "BASE_URL": "https://api.cloudflare.com/client/v4",
    "TIMEOUT": (5.0, 30.0),
    "MAX_RETRIES": 3,
    "DEADLINE": 30.0,
    "PATH": "cfkv.sqlite3",
    "BUSY_TIMEOUT": 5.0,
}

# Environment fallbacks, under the names wrangler and Cloudflare's SDK use.
ENV_FALLBACKS = {
    "ACCOUNT_ID": "CLOUDFLARE_ACCOUNT_ID",
    "API_TOKEN": "CLOUDFLARE_API_TOKEN",
    "BASE_URL": "CLOUDFLARE_BASE_URL",
}
NAMESPACE_ENV = "CFKV_NAMESPACE_ID"  # the default alias only: one id cannot serve two aliases

# Flat settings read by the session engine, the limiter and friends, with defaults.
SETTING_DEFAULTS = {
    "SESSION_CFKV_ALIAS": "default",
    "SESSION_CFKV_FORMAT": "signed",
    "SESSION_CFKV_KEY_PREFIX": "session:",
    "SESSION_CFKV_KEY_LAYOUT": "hashed",
    "SESSION_CFKV_REFRESH_INTERVAL": 60,
    "SESSION_CFKV_ON_LOAD_ERROR": "empty",
    "SESSION_CFKV_USER_FIELD": "pk",
    "SESSION_CFKV_NEAR_CACHE_TIMEOUT": 0,
    "CFKV_RATELIMIT": {},
}



def setting(name):
    """Return a flat django-cfkv setting, or its default."""
    return getattr(settings, name, SETTING_DEFAULTS[name])


@functools.cache
def get_config():
    """Return ``settings.CFKV``; with no such setting, one "default" alias from the environment."""
    config = getattr(settings, "CFKV", None)
    if config is None:
        config = {"default": {}}
    if not isinstance(config, dict):
        raise CFKVConfigurationError("CFKV must be a dict of aliases, like DATABASES: {'default': {...}}.")
    return config


def alias_config(alias):
    """Return one alias' settings merged with defaults and environment fallbacks."""
    config = get_config()
    if alias not in config:
        raise CFKVConfigurationError(
            f"The CFKV alias {alias!r} is not configured. Add CFKV[{alias!r}] to your settings "
            f"(configured: {', '.join(sorted(config)) or 'none'})."
        )
    raw = config[alias]
    if not isinstance(raw, dict):
        raise CFKVConfigurationError(f"CFKV[{alias!r}] must be a dict of settings.")
    merged = dict(ALIAS_DEFAULTS)
    for name, env in ENV_FALLBACKS.items():
        if os.environ.get(env):
            merged[name] = os.environ[env]
    if alias == "default" and os.environ.get(NAMESPACE_ENV):
        merged["NAMESPACE_ID"] = os.environ[NAMESPACE_ENV]
    merged.update(raw)
    return merged


def build_kv(alias):
    """Build a new client or store for ``alias``; CFKVConfigurationError says what is missing."""
    config = alias_config(alias)
    backend = config["BACKEND"]
    if backend == "cloudflare":
        missing = [n for n in ("ACCOUNT_ID", "NAMESPACE_ID", "API_TOKEN") if not config.get(n)]
        if missing:
            hints = ", ".join(
                f"{n} (or ${ENV_FALLBACKS.get(n, NAMESPACE_ENV)})" for n in missing
            )
            raise CFKVConfigurationError(f"CFKV[{alias!r}] needs {hints} to reach Cloudflare.")
        from .client import KVClient

        return KVClient(
            config["ACCOUNT_ID"], config["NAMESPACE_ID"], config["API_TOKEN"],
            base_url=config["BASE_URL"], timeout=config["TIMEOUT"], max_retries=config["MAX_RETRIES"],
            deadline=config["DEADLINE"],
        )
    if backend == "local":
        from .local import LocalKV

        return LocalKV(config["PATH"], namespace=config.get("NAMESPACE_ID") or "",
                       busy_timeout=config["BUSY_TIMEOUT"])
    try:
        cls = import_string(backend)
    except ImportError as exc:
        raise CFKVConfigurationError(
            f"CFKV[{alias!r}]['BACKEND'] is {backend!r}: use 'cloudflare', 'local' or the dotted "
            "path of a class with the KV interface."
        ) from exc
    return cls(**config.get("OPTIONS", {}))


_instances = {}
_instances_lock = threading.Lock()


def get_kv(alias="default"):
    """Return the process-wide KV object for ``alias``, building it on first use."""
    kv = _instances.get(alias)
    if kv is None:
        with _instances_lock:
            kv = _instances.get(alias)
            if kv is None:
                kv = _instances[alias] = build_kv(alias)
    return kv


def reset():
    """Forget built clients (closing their connections) and re-read settings."""
    get_config.cache_clear()
    with _instances_lock:
        for kv in _instances.values():
            close = getattr(kv, "close", None)
            if close:
                close()
        _instances.clear()


@receiver(setting_changed)
def _on_setting_changed(setting, **kwargs):
    if setting == "CFKV":
        reset()
