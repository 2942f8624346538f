"""The user of a session: a Worker's ``userId`` and Django's ``_auth_user_id``, each from the other.

In the JSON format ``userId`` (top level) is the one source of truth for who
the session belongs to; Django's own auth keys live in ``data`` beside it
(backend, auth hash) and are rebuilt from ``userId`` on every load.
"""

import logging
from typing import Any

from django.core.exceptions import ValidationError

from .. import conf
from . import memory
from .codec import Value
from .plans import Plan, Query

logger = logging.getLogger("django_cfkv.sessions")

# The session keys django.contrib.auth uses (imported from there lazily).
SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY = "_auth_user_id", "_auth_user_backend", "_auth_user_hash"

#: (Django's user id, the ``userId`` value it maps to), as a load found them.
UserRef = tuple[str, Any]


def worker_user_id(auth_id: str | None, known: UserRef | None = None) -> Plan[Any]:
    """Return the ``userId`` value for Django's user id: a string, as ``_auth_user_id`` is (a plan).

    Under SESSION_CFKV_USER_FIELD it is that field's value as text (one query). A
    ``userId`` a Worker wrote (``known``) is kept as it was while the user is unchanged.
    """
    if auth_id is None:
        return None
    if known and known[0] == auth_id and str(known[1]) not in memory.former_user_values:
        return known[1]  # unchanged: keep the Worker's value as it wrote it
    field = conf.setting("SESSION_CFKV_USER_FIELD")
    if field == "pk":
        return str(auth_id)
    value = yield Query(_field_of, auth_id, field)
    return None if value is None else str(value)


def _field_of(auth_id: str, field: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model()._default_manager.filter(pk=auth_id).values_list(field, flat=True).first()


def django_data(value: Value) -> Plan[tuple[dict[str, Any], UserRef | None]]:
    """Return the session dict with Django's auth keys for the user ``userId`` names, and how it was found (a plan:
    a query finds the user, unless Django wrote the session and users are named by pk).

    ``userId`` is authoritative, and names a user only in its exact form
    (see :func:`user_lookup_value`); any other value is an anonymous
    session. When Django wrote the session, its auth hash is in ``data``,
    and Django's own check logs out a session whose ``userId`` was changed
    to another user. A session a Worker wrote gets the user's current hash
    and the first AUTHENTICATION_BACKENDS entry.
    """
    data = dict(value.data)
    data.pop(SESSION_KEY, None)
    user_id = value.extra.get("userId")
    field = conf.setting("SESSION_CFKV_USER_FIELD")
    lookup = None if user_id is None else user_lookup_value(field, user_id)
    if lookup is not None and field == "pk" and HASH_SESSION_KEY in data and BACKEND_SESSION_KEY in data:
        auth_id = str(lookup)  # Django's own check of the hash finds the user: no query here
    else:
        user = None if lookup is None else (yield Query(_find_user, field, lookup, user_id))
        if user is None:
            data.pop(BACKEND_SESSION_KEY, None)
            data.pop(HASH_SESSION_KEY, None)
            return data, None
        auth_id = user._meta.pk.value_to_string(user)
        data.setdefault(BACKEND_SESSION_KEY, conf.setting("AUTHENTICATION_BACKENDS")[0])
        if hasattr(user, "get_session_auth_hash"):
            data.setdefault(HASH_SESSION_KEY, user.get_session_auth_hash())
    data[SESSION_KEY] = auth_id
    return data, (auth_id, user_id)


def user_lookup_value(field: str, user_id: object) -> Any:
    """Return the value of the user model's ``field`` that ``user_id`` names, or None if it names none.

    A Worker-written ``userId`` names a user only in the exact form Django
    would write or a Worker would take from the user: the field's value as a
    string (``"42"``, a UUID in its canonical text, an email as stored) or,
    for an integer field, that JSON integer (``42``). Anything else (``true``,
    ``42.0``, ``"042"``, ``" 42"``, a list, an integer out of the field's
    range...) is None, so it can never be coerced into some user.
    """
    if isinstance(user_id, bool) or not isinstance(user_id, (int, str)) or user_id == "":
        return None
    from django.contrib.auth import get_user_model

    meta = get_user_model()._meta
    model_field: Any = meta.pk if field == "pk" else meta.get_field(field)
    try:
        value = model_field.to_python(user_id)
        model_field.run_validators(value)  # the integer range, max_length...
    except (ValidationError, ValueError, TypeError, OverflowError):
        value = None
    exact = value is not None and (
        user_id == str(value) if isinstance(user_id, str) else type(value) is int and user_id == value)
    if not exact:
        logger.warning("Session userId (a %s) is not a %s in its exact form; the session stays anonymous.",
                       type(user_id).__name__, field)
        return None
    return value


def _find_user(field: str, value: Any, user_id: object) -> Any:
    """Return the one user whose ``field`` is ``value`` exactly, or None (none, several, another form)."""
    from django.contrib.auth import get_user_model

    found = list(get_user_model()._default_manager.filter(**{field: value})[:2])
    if len(found) != 1:
        if found:
            logger.warning("Session userId matches several users by %r; the session stays anonymous.", field)
        return None
    stored = found[0].pk if field == "pk" else getattr(found[0], field)
    # A database may match loosely (a case-insensitive collation): the user's own value must be the one named.
    return found[0] if stored == value and str(stored) == str(user_id) else None
