"""A session's entry in its user's index (see ``index``), as a store follows its session.

What the entry records (:func:`recorded`), the write that keeps it in step
with the session (:func:`rewrite`: only when the user, the expiry or the
client changed, so at sign-in and at each expiry refresh, never on a change of
data alone), and the names that go with the session when it is deleted
(:func:`names`).
"""

import json
from collections.abc import Callable
from typing import Any

from .. import limits, metadata
from ..exceptions import KVValueError
from . import codec, index, keys, memory, users
from .codec import Value
from .options import session_format
from .plans import KVCall, Plan
from .state import Indexed, Stored
from .users import SESSION_KEY


def recorded(data: dict[str, Any], expires: float | None) -> Indexed | None:
    """Return what the user's index entry records for this session data and expiry (None: no entry)."""
    user = data.get(SESSION_KEY)
    if user is None or expires is None or not index.enabled():
        return None
    return Indexed(str(user), expires, json.dumps(index.client_fields(data.get(index.CLIENT_KEY)), sort_keys=True))


def owner(stored: Stored, user: str) -> Plan[str | None]:
    """Return the ``userId`` (as text) naming Django's user ``user`` in the index; None when there is no such user.

    Kept on ``stored``: for SESSION_CFKV_USER_FIELD other than "pk" it takes a query.
    """
    if stored.owner is None or stored.owner[0] != user or stored.owner[1] in memory.former_user_values:
        known = yield from users.worker_user_id(user, stored.user_ref)
        stored.owner = (user, None if known is None else str(known))
    return stored.owner[1]


def owner_of(value: Value, fmt: str) -> Plan[str | None]:
    """Return the ``userId`` (as text) of the user a stored session value belongs to, or None."""
    return (yield from user_of(value, fmt))[0]


def user_of(value: Value, fmt: str) -> Plan[tuple[str | None, str | None]]:
    """Return the ``userId`` and the pk (each as text) of the user a stored session value belongs to, or Nones."""
    if fmt == "json":
        user_ref = (yield from users.django_data(value))[1]
        return (None, None) if user_ref is None else (str(user_ref[1]), str(user_ref[0]))
    user = value.data.get(SESSION_KEY)
    known = None if user is None else (yield from users.worker_user_id(str(user)))
    return (None, None) if known is None else (str(known), str(user))


def rewrite(prefix: str, session_key: str, stored: Stored, data: dict[str, Any], expires: float,
            created: float | None, now: float) -> Plan[None]:
    """Write the session's entry if what it records changed (one PUT); delete a former user's (one bulk delete)."""
    entry = recorded(data, expires)
    if stored.index_known and entry == stored.index:
        return
    ref = keys.hashed_id(session_key)
    name = None if entry is None else (yield from owner(stored, entry.user))
    if entry is not None and name is not None:
        yield KVCall("put", index.entry_key(prefix, name, ref), b"", expiration_ttl=metadata.kv_ttl(expires, now),
                     metadata=index.entry_metadata(expires, created, now, data.get(index.CLIENT_KEY), entry.user))
    former = stored.index if stored.index_known else None
    if former is not None and (entry is None or former.user != entry.user):
        gone = yield from owner(stored, former.user)
        if gone is not None:
            yield KVCall("delete_many", [user_prefix + ref for user_prefix in index.user_prefixes(prefix, gone)])
    stored.index, stored.index_known = entry, True


def names(prefix: str, session_key: str, stored: Stored | None,
          read_owner: Callable[[], Plan[str | None]] | None = None) -> Plan[list[str]]:
    """Return the names the session's entry may have (under SECRET_KEY and each fallback), to delete with it.

    Its user is the one ``stored`` knows, else the one ``read_owner()`` finds.
    """
    if not index.enabled():
        return []
    if stored is not None and stored.index_known:
        name = None if stored.index is None else (yield from owner(stored, stored.index.user))
    else:
        name = None if read_owner is None else (yield from read_owner())
    ref = keys.hashed_id(session_key)
    return [] if name is None else [user_prefix + ref for user_prefix in index.user_prefixes(prefix, name)]


def for_moved(store: Any, moved: dict[str, tuple[bytes, int | None]], now: float) -> Plan[list[dict[str, Any]]]:
    """Return the bulk-write items of the index entries of signed-in sessions moved to ``store``'s keys.

    ``moved`` maps each session id to its stored value and the KV expiry it
    is moved with, which its entry gets too. A value that cannot be read, has
    no user or has expired gets no entry, nor one whose metadata KV would
    refuse (whatever a writer put in the value). Naming the user takes a query
    per session, unless users are named by pk and Django wrote the session.
    """
    if not index.enabled():
        return []
    items, prefix, fmt = [], store.key_prefix(), session_format()
    for session_key, (raw, expiration) in moved.items():
        try:
            value = codec.parse(raw, fmt, store.key_salt_value(), session_key)
        except ValueError:
            continue  # the store cannot read it either
        name, user = yield from user_of(value, fmt)
        if name is None or value.expires is None or value.expires <= now:
            continue
        # In the json format a session without Django's auth hash (a Worker's) is whoever its userId names: no holder.
        user = user if fmt != "json" or users.HASH_SESSION_KEY in value.data else None
        meta = index.entry_metadata(value.expires, value.created, now, value.data.get(index.CLIENT_KEY), user)
        try:
            limits.encode_metadata(meta)
        except KVValueError:
            continue
        items.append({"key": index.entry_key(prefix, name, keys.hashed_id(session_key)), "value": b"",
                      "expiration": expiration, "metadata": meta})
    return items
