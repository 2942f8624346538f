"""A user's index follows a change of their SESSION_CFKV_USER_FIELD value, once the change is committed.

Index entries are named after the user's value (``index.owner_name``), so a user
whose value changes would keep their sessions under the former one: out of their
own list and "Sign out everywhere", and in the list of the value's next holder.
Before a user is saved (the user model, a proxy or a subclass of it) the value in
the database is read (one query, unless ``update_fields`` leaves the field out;
locked for the transaction inside one, so a concurrent change commits first);
when the save changes it, the index moves once the transaction commits, so a save
that fails or is rolled back moves nothing.

Each session listed is read first, and only the user's own are touched: the
value may be another user's now, or have been (two users swapping emails in one
transaction), and a session not readable yet (KV's lag after a sign-in
elsewhere) keeps its entry where it is.

* signed format: the sessions name their user by pk and stay signed in; each live
  entry is written under the new value, with its metadata and expiry (the latest
  one when SECRET_KEY_FALLBACKS lists it twice), and the former ones are deleted.
* json format: a session's ``userId`` names the value. One Django signed the user
  in on (its auth hash is theirs) is rewritten to name the new value, and its
  entry moves: it stays signed in. One with no auth hash (a Worker's) is deleted:
  it would sign in the value's next holder. One whose entry names the user as its
  holder moves too, though a password change since ended it (a request of theirs
  may be about to store their new hash in it, and a Worker would serve it to the
  value's next holder). One with another user's hash is left alone: Django signs
  no one in on it, and whoever holds the value lists it. One this process deleted
  in the last minute is not written back (KV may still serve it); one another
  process deleted in that minute may be, under the new value (documented).

KV lists a key up to a minute after its write, so a move also writes a marker
(``index.moved_key``) naming the entries it wrote and the user who moved, which
every listing of that user's sessions within that minute reads by its name
(``per_user.moved``): their list, each sign-out and a second change find them.
A request of this process that read the former value before the change asks the
database again before it writes its session (``memory.former_user_values``).

API calls: a list call per 1,000 entries (per key while SECRET_KEY_FALLBACKS is
set), one read of the marker, a bulk read per 100 sessions, a bulk write and a
bulk delete; when nothing is listed, the list and the read only. A KV failure
after the commit cannot undo the save: it is logged, the sessions stay where
they were, and ``manage.py cfkv sessions --user <username> --former <value>``
moves them. So does a change that sends no signal (``QuerySet.update()``,
``bulk_update()``, raw SQL, fixtures, a data migration's historical model, a
save of a parent model of the user model). A session a request of another
process writes under the former value after the move, having read the user
before the change, stays there.
"""

import logging
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.db import transaction

from .. import clock, conf, limits, metadata
from ..exceptions import CFKVConfigurationError, KVError, KVValueError
from . import codec, index, memory, options
from .per_user import NEVER, PendingMove, listings, revoke, revoke_listed, user_identity, user_pk
from .plans import KVCall, Plan, run
from .tokens import token_store
from .users import HASH_SESSION_KEY, SESSION_KEY

logger = logging.getLogger("django_cfkv.sessions")

_FORMER = "_cfkv_former_user_value"  # set on the instance between its pre_save and post_save


def user_models() -> list[Any]:
    """Return the user model and every proxy and subclass of it (none when no user model is installed)."""
    from django.apps import apps
    from django.contrib.auth import get_user_model

    try:
        user_model = get_user_model()
    except ImproperlyConfigured:
        return []
    return [model for model in apps.get_models() if issubclass(model, user_model)]


def _indexed_users(sender: Any) -> bool:
    """Return True if ``sender`` is the user model (or a proxy or subclass of it) and sessions are indexed (not
    when these settings hold a mistake: ``manage.py check`` reports it, and a user's save must not fail on it)."""
    from django.contrib.auth import get_user_model

    if not isinstance(sender, type) or not issubclass(sender, get_user_model()):
        return False
    try:
        return index.enabled() and conf.setting("SESSION_CFKV_ALIAS") in conf.get_config()
    except CFKVConfigurationError:
        return False  # a site using KV for its cache alone may have no alias for sessions


def _field(sender: Any) -> str | None:
    """Return SESSION_CFKV_USER_FIELD when a save of ``sender`` may move an index, else None."""
    field = conf.setting("SESSION_CFKV_USER_FIELD")
    if field == "pk" or not _indexed_users(sender):  # "pk" first: every save of every model asks
        return None
    try:
        sender._meta.get_field(field)
    except FieldDoesNotExist:
        return None
    return field


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
    rows = sender._base_manager.using(using).filter(pk=instance.pk)
    if transaction.get_connection(using).in_atomic_block:
        rows = rows.select_for_update()  # a concurrent change commits first, and its value is the former one
    former = next(iter(rows.values_list(field, flat=True)), None)  # no LIMIT: some databases refuse it FOR UPDATE
    if former is not None:
        instance.__dict__[_FORMER] = str(former)


def follow_saved_value(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    """post_save: when the save changed the user's value, move their index once the transaction commits."""
    former = instance.__dict__.pop(_FORMER, None)
    field = _field(sender)
    if former is None or field is None or str(instance.serializable_value(field)) == former:
        return
    pk, owner = instance.pk, user_pk(instance)
    # A PendingMove, so a sign-out before the commit finds the sessions where they still are (per_user._revoke_all).
    transaction.on_commit(PendingMove(owner, former, lambda: _after_commit(sender, using, pk, owner, former)),
                          using=using)


def sign_out_deleted_user(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    """post_delete: sign a deleted user out everywhere once the deletion commits. Their sessions would stay until
    they expire, and in the json format a Worker's would sign in whoever is given their value (or pk) next."""
    usable = conf.setting("SESSION_CFKV_USER_FIELD") == "pk" or _field(sender) is not None  # no typo'd field
    identity = user_identity(instance) if usable and _indexed_users(sender) and instance.pk is not None else None
    if identity is not None:
        pk, owner = instance.pk, user_pk(instance)
        transaction.on_commit(lambda: _follow(f"user pk {pk} was deleted", revoke_listed(identity, owner)),
                              using=using)


def _after_commit(model: Any, using: str | None, pk: Any, owner: str, former: str) -> None:
    field = _field(model)
    user = None if field is None else model._base_manager.using(using).filter(pk=pk).first()
    if user is None:  # deleted in the same transaction: its sessions are listed under the value it had before
        _follow(f"user pk {pk} was deleted", revoke_listed(former, owner))
    elif user_identity(user) != former:  # else a later save of the transaction put the value back
        _follow(f"user pk {pk}'s {field} changed", move_index(former, user))


def _follow(change: str, plan: Plan[int]) -> None:
    """Run the plan that makes a user's sessions follow ``change``; log what a KV failure left behind."""
    try:
        count = run(plan, lambda: token_store().get_kv())
    except Exception as exc:  # the change is committed: raising now would not undo it, and would fail the request
        # A KV or settings error says what to fix; anything else (a value a namespace writer planted) by its type.
        reason = str(exc) if isinstance(exc, (KVError, CFKVConfigurationError)) else type(exc).__name__
        logger.warning(
            "A user's sessions could not follow a change (%s): %s. They stay listed under the value the user had; "
            "run: manage.py cfkv sessions --user <username> --former <that value>, or sign the user out "
            "everywhere.", change, reason)
    else:
        logger.info("A user's sessions followed a change (%s): %d sessions.", change, count)


def follow_former_value(user: Any, former: str) -> int:
    """Move the index kept under ``user``'s former value to their current one (``manage.py cfkv sessions --user
    U --former V``): after a change no signal saw, or a move that failed. Return how many sessions moved.

    Raise ValueError when another user holds ``former`` now: what is listed under it may be theirs.
    """
    field = conf.setting("SESSION_CFKV_USER_FIELD")
    try:
        held = type(user)._base_manager.filter(**{field: former}).exclude(pk=user.pk).exists()
    except (ValueError, TypeError, ValidationError):
        held = False  # not a value the field can hold: no user holds it
    if held:
        raise ValueError(f"Another user's {field} is that value now: their sessions are listed under it.")
    if user_identity(user) in (None, former):
        return 0
    return run(move_index(former, user), lambda: token_store().get_kv())


def move_index(former: str, user: Any) -> Plan[int]:
    """Move the index listed under the ``userId`` ``former`` to ``user``'s current one, with the marker of a move
    to ``former`` (a plan); return how many sessions moved. Only the user's own sessions are touched (see above).
    """
    now, fmt, store = clock.now(), options.session_format(), token_store()
    current, auth_id, hashes = user_identity(user), user_pk(user), _auth_hashes(user)
    memory.former_user_values.add(former)  # stores of this process that read it re-read the user's value
    listed, marked = yield from listings(former, auth_id)  # with what the user's move to ``former`` lately wrote
    latest: dict[str, tuple[index.UserSession | None, Any]] = {}
    names: dict[str, list[str]] = {}
    for user_prefix, infos in listed:
        for info in infos:
            ref = info.name[len(user_prefix):]
            if not index.is_ref(ref):
                continue
            names.setdefault(ref, []).append(info.name)
            entry, known = index.read_entry(info, user_prefix, now), latest.get(ref, (None, None))[0]
            if ref not in latest or (entry is not None and (known is None or (entry.last_seen or NEVER)
                                                            > (known.last_seen or NEVER))):
                latest[ref] = (entry, info.metadata)
    if not names or current is None:
        return 0
    found = yield KVCall("get_many", [store.ref_key(ref) for ref in names])
    entries: list[dict[str, Any]] = []
    sessions: list[dict[str, Any]] = []
    doomed: dict[str, list[str]] = {}
    gone: list[str] = []
    for ref, (entry, meta) in latest.items():
        raw = found.get(store.ref_key(ref))
        value = codec.parse_or_none(raw, fmt, store.key_salt_value())
        if raw is None or value is None or ref in memory.recently_deleted:  # KV may serve a deleted one for ~60 s
            continue
        if fmt == "json":
            signed_in_by = value.data.get(HASH_SESSION_KEY)  # Django's auth hash: whose session it is
            if str(value.extra.get("userId")) != former:
                continue
            if signed_in_by is not None and (not isinstance(signed_in_by, str) or signed_in_by not in hashes) and (
                    not index.holds(meta, auth_id)):  # theirs before a password change (a request may mend it) moves
                continue  # maybe another user's: Django refuses it to anyone else, and their listing finds it
            renamed = None if signed_in_by is None else _renamed(raw, value, current, now)
            if renamed is None:
                doomed[ref] = names[ref]  # a Worker's would sign in the value's next holder
                continue
            sessions.append({"key": store.ref_key(ref), **renamed})
        elif str(value.data.get(SESSION_KEY)) != auth_id:
            continue
        item = _moved_entry(index.entry_key(store.key_prefix(), current, ref), None if entry is None else meta,
                            value, auth_id, now)
        entries += [item] if item else []
        gone += names[ref]
    if entries or sessions:
        moved = index.moved_marker(store.key_prefix(), current, auth_id,
                                   [(item["key"], item["metadata"]) for item in entries], now)
        with memory.writing(*(session["key"] for session in sessions)):  # the near cache forgets what it held
            yield KVCall("put_many", entries + sessions + [moved])  # an entry before its session, as the store does
    # The user's own marker under ``former`` goes with the entries it names (another user's, as when two users swap
    # values, stays theirs).
    yield from revoke(doomed, also=[*gone, *([index.moved_key(store.key_prefix(), former)] if marked else [])])
    return len(entries)


def _auth_hashes(user: Any) -> set[str]:
    """The session auth hashes Django signs ``user`` in with (SECRET_KEY's, and each fallback's)."""
    if not hasattr(user, "get_session_auth_hash"):
        return set()
    fallbacks = getattr(user, "get_session_auth_fallback_hash", lambda: ())
    return {user.get_session_auth_hash(), *fallbacks()}


def _renamed(raw: bytes, value: codec.Value, current: str, now: float) -> dict[str, Any] | None:
    """Return the bulk-write fields of a json session rewritten to name ``current``; None when it has expired."""
    if value.expires is None or value.expires <= now:
        return None
    envelope = limits.loads_json(raw)  # read once already by codec.parse, as any writer's value is
    envelope["userId"] = current
    text = codec.dumps_json(envelope)
    return {"value": text, "expiration_ttl": metadata.kv_ttl(value.expires, now),
            "metadata": metadata.build(metadata.SESSION, expires=value.expires, size=len(text.encode("utf-8")))}


def _moved_entry(key: str, meta: Any, value: codec.Value, user: str, now: float) -> dict[str, Any] | None:
    """Return the bulk-write item of a session's entry under its new name: its metadata ``meta`` if it was live,
    else what the store would write, naming Django's user ``user`` (pk as text) as its holder under SECRET_KEY; None
    when the session has expired or KV would refuse the metadata."""
    if value.expires is None or value.expires <= now:
        return None
    if meta is None:
        meta = index.entry_metadata(value.expires, value.created, now, value.data.get(index.CLIENT_KEY), user)
    # Held under a fallback key, or written before holders were: named under SECRET_KEY, if the holder fits.
    named = {**meta, **index.holder(user)} if isinstance(meta, dict) else meta
    for fields in (named, meta):
        try:
            limits.encode_metadata(fields)
        except KVValueError:
            continue
        return {"key": key, "value": b"", "metadata": fields, "expiration_ttl": metadata.kv_ttl(value.expires, now)}
    return None
