"""The session engine's own settings, each checked where it is used (``manage.py check`` reports them too)."""

from .. import conf
from ..exceptions import CFKVConfigurationError

FORMATS = ("signed", "json")
LAYOUTS = ("hashed", "plain")
ON_LOAD_ERROR_CHOICES = ("empty", "raise")


def session_format() -> str:
    """Return SESSION_CFKV_FORMAT, or raise CFKVConfigurationError if it is not a known one."""
    fmt = conf.setting("SESSION_CFKV_FORMAT")
    if fmt not in FORMATS:
        raise CFKVConfigurationError(f"SESSION_CFKV_FORMAT is {fmt!r}; use 'signed' or 'json'.", "django_cfkv.E202")
    return fmt


def key_layout() -> str:
    """Return SESSION_CFKV_KEY_LAYOUT, or raise CFKVConfigurationError if it is not a known one."""
    layout = conf.setting("SESSION_CFKV_KEY_LAYOUT")
    if layout not in LAYOUTS:
        raise CFKVConfigurationError(
            f"SESSION_CFKV_KEY_LAYOUT is {layout!r}; use 'hashed' (the default) or 'plain'.", "django_cfkv.E201")
    return layout


def on_load_error() -> str:
    """Return SESSION_CFKV_ON_LOAD_ERROR, or raise CFKVConfigurationError if it is not a known one."""
    on_error = conf.setting("SESSION_CFKV_ON_LOAD_ERROR")
    if on_error not in ON_LOAD_ERROR_CHOICES:
        raise CFKVConfigurationError(
            f"SESSION_CFKV_ON_LOAD_ERROR is {on_error!r}; use 'empty' or 'raise'.", "django_cfkv.E203") from None
    return on_error


def user_index() -> bool:
    """Return SESSION_CFKV_USER_INDEX, or raise CFKVConfigurationError if it is not True or False."""
    on = conf.setting("SESSION_CFKV_USER_INDEX")
    if not isinstance(on, bool):
        raise CFKVConfigurationError(
            f"SESSION_CFKV_USER_INDEX is {on!r}; use True (index each user's sessions) or False.",
            "django_cfkv.E205", "Leave it unset for True; False saves a write per sign-in and per refresh, "
            "and turns user_sessions() and the revoke_*() functions off.")
    return on
