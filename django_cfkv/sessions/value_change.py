"""A user's index follows a change of their SESSION_CFKV_USER_FIELD value, once the change is committed.

Index entries are named after the user's value (``index.owner_name``), so a user
whose value changes would keep their sessions under the former one: out of their
own list and "Sign out everywhere", and in the list of the value's next holder.
Before a user is saved (the user model, a proxy or a subclass of it) the value in
the database is read (one query, unless ``update_fields`` leaves the field out);
when the save changes it, the index moves once the transaction commits, so a save
that fails or is rolled back moves nothing:

Each session listed is read first, and only the user's own are touched: the
value may be another user's now, or have been (two users swapping emails in one
transaction), and a session not readable yet (KV's lag after a sign-in
elsewhere) keeps its entry where it is.

* signed format: the sessions name their user by pk and stay signed in; each live
  entry is written under the new value, with its metadata and expiry (the latest
  one when SECRET_KEY_FALLBACKS lists it twice), and the former ones are deleted.
* json format: a session's ``userId`` still names the former value, so it is
  anonymous from now on. One Django wrote carries its auth hash, which no other
  user's matches: it is left to expire, so the request that made the change can
  still write its own. Any other (a Worker's) would sign in the value's next
  holder: it is deleted. The former entries are deleted.

API calls: a list call per 1,000 entries (per key while SECRET_KEY_FALLBACKS is
set), a bulk read per 100 sessions, a bulk write (signed) and a bulk delete.
Nothing is called when the value is unchanged, or when sessions are not in KV.
A KV failure after the commit cannot undo the save: it is logged, the sessions
stay where they were, and ``manage.py cfkv sessions --user <username> --former
<value>`` moves them. So does a change that sends no signal
(``QuerySet.update()``, raw SQL). KV's listings lag writes by up to about 60 seconds, so an entry written
under the former value in the minute before the move (or by a request that read
the user before the commit) may stay there.
"""

import logging
from typing import Any

from django.db import transaction

from .. import clock, conf, limits, metadata
from ..exceptions import CFKVConfigurationError, KVError, KVValueError
from . import codec, index, options
from .bearer import BearerSessionMiddleware
from .per_user import NEVER, listings, revoke, user_identity
from .plans import KVCall, Plan, run
from .tokens import engine_session_store, token_store
from .users import HASH_SESSION_KEY, SESSION_KEY

logger = logging.getLogger("django_cfkv.sessions")

_FORMER = "_cfkv_former_user_value"  # set on the instance between its pre_save and post_save


def sessions_in_kv() -> bool:
    """Return True if sessions live in KV: SESSION_ENGINE is a KV engine, or bearer tokens are used."""
    if conf.middleware_position(list(conf.setting("MIDDLEWARE") or ()), BearerSessionMiddleware) is not None:
        return True
    try:
        engine_session_store()
    except (ImportError, CFKVConfigurationError):
        return False
    return True


def _field(sender: Any) -> str | None:
    """Return SESSION_CFKV_USER_FIELD when a save of ``sender`` may move an index, else None."""
    from django.contrib.auth import get_user_model

    field = conf.setting("SESSION_CFKV_USER_FIELD")
    if field == "pk" or not isinstance(sender, type) or not issubclass(sender, get_user_model()):
        return None
    return field if index.enabled() else None


def note_former_value(sender: Any, instance: Any, raw: bool = False, using: str | None = None,
                      update_fields: Any = None, **kwargs: Any) -> None:
    """pre_save: keep the user's value as the database holds it, when this save may change it."""
    field = _field(sender)
    if field is None:
        return
    instance.__dict__.pop(_FORMER, None)  # a failed save's
    attname = instance._meta.get_field(field).attname
    if raw or instance.pk is None or (update_fields is not None and not {field, attname} & set(update_fields)):
        return
    former = sender._base_manager.using(using).filter(pk=instance.pk).values_list(field, flat=True).first()
    if former is not None:
        instance.__dict__[_FORMER] = str(former)


def follow_saved_value(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    """post_save: when the save changed the user's value, move their index once the transaction commits."""
    former = instance.__dict__.pop(_FORMER, None)
    if former is None or str(instance.serializable_value(_field(sender) or "pk")) == former:
        return
    pk = instance.pk
    transaction.on_commit(lambda: _after_commit(sender, using, pk, former), using=using)


def _after_commit(model: Any, using: str | None, pk: Any, former: str) -> None:
    field = _field(model)
    if field is None or not sessions_in_kv():
        return
    current = model._base_manager.using(using).filter(pk=pk).values_list(field, flat=True).first()
    if current is None or str(current) == former:
        return  # the user is gone, or a later save of the transaction put the value back
    try:
        moved = run(move_index(former, str(current), str(pk)), lambda: token_store().get_kv())
    except (KVError, CFKVConfigurationError) as exc:  # the save is committed: raising now would not undo it
        logger.warning(
            "A user's %s changed, but their sessions' index could not follow it (%s): their sessions stay listed "
            "under the former value. Run: manage.py cfkv sessions --user <username> --former <the former value> "
            "(user pk %s).",
            field, exc, pk)
    else:
        logger.info("A user's %s changed, and their sessions' index followed it (%d sessions; user pk %s).",
                    field, moved, pk)


def move_index(former: str, current: str, auth_id: str) -> Plan[int]:
    """Move the index listed under the ``userId`` ``former`` to ``current``, for the sessions of Django's user
    ``auth_id`` (a plan). Return how many entries moved; in the json format, how many sessions a Worker wrote
    naming ``former`` were deleted.

    Each session is read first: an entry is moved only when its session is this user's (another user may
    hold the value now, or have held it, as when two users swap emails in one transaction), and an entry
    whose session cannot be read yet (KV's lag after a sign-in elsewhere) is left where it is.
    """
    now, prefix, fmt, store = clock.now(), token_store().key_prefix(), options.session_format(), token_store()
    latest: dict[str, tuple[index.UserSession | None, Any]] = {}
    names: dict[str, list[str]] = {}
    for user_prefix, infos in (yield from listings(former)):
        for info in infos:
            ref = info.name[len(user_prefix):]
            if not index.is_ref(ref):
                continue
            names.setdefault(ref, []).append(info.name)
            entry, known = index.read_entry(info, user_prefix, now), latest.get(ref, (None, None))[0]
            if ref not in latest or (entry is not None and (known is None or (entry.last_seen or NEVER)
                                                            > (known.last_seen or NEVER))):
                latest[ref] = (entry, info.metadata)
    if not names:
        return 0
    found = yield KVCall("get_many", [store.ref_key(ref) for ref in names])
    items: list[dict[str, Any]] = []
    doomed: dict[str, list[str]] = {}
    gone: list[str] = []
    for ref, (entry, meta) in latest.items():
        value = _read(found.get(store.ref_key(ref)), fmt, store.key_salt_value())
        if value is None:
            continue
        if fmt == "json":  # a session naming ``former`` is anonymous from now on
            if str(value.extra.get("userId")) != former:
                continue
            if HASH_SESSION_KEY in value.data:
                gone += names[ref]  # Django's: its auth hash signs in no other user
            else:
                doomed[ref] = names[ref]  # a Worker's would sign in the value's next holder
        elif str(value.data.get(SESSION_KEY)) == auth_id:
            item = None if entry is None else _moved_entry(index.entry_key(prefix, current, ref), entry, meta, now)
            items += [item] if item else []
            gone += names[ref]
    if items:
        yield KVCall("put_many", items)
    yield from revoke(doomed, also=gone)
    return len(doomed) if fmt == "json" else len(items)


def _read(raw: bytes | None, fmt: str, salt: str) -> Any:
    """Return the session value in ``raw``, or None when it is missing or cannot be read."""
    try:
        return None if raw is None else codec.parse(raw, fmt, salt)
    except ValueError:
        return None


def follow_former_value(user: Any, former: str) -> int:
    """Move the index kept under ``user``'s former value to their current one (``manage.py cfkv sessions --user
    U --former V``): after a change no signal saw, or a move that failed. Return what :func:`move_index` does."""
    current = user_identity(user)
    if current is None or current == former:
        return 0
    return run(move_index(former, current, str(user.pk)), lambda: token_store().get_kv())


def _moved_entry(key: str, entry: index.UserSession, meta: Any, now: float) -> dict[str, Any] | None:
    """Return the bulk-write item of an entry under its new name, or None when KV would refuse its metadata."""
    if entry.expires is None:
        return None
    try:
        limits.encode_metadata(meta)
    except KVValueError:
        return None
    ttl = metadata.kv_ttl(entry.expires.timestamp(), now)
    return {"key": key, "value": b"", "metadata": meta, "expiration_ttl": ttl}
