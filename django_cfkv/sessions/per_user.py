"""A user's sessions: list them, sign out one, the others or all of them.

Every session a user signs in on (a cookie session or a bearer token, made by
Django or by a Worker keeping the same layout) has an entry in the user's
index (:mod:`~django_cfkv.sessions.index`), so these functions list one prefix
of the namespace, never the whole of it.

API calls: listing a user's sessions costs one list call per 1,000 of them
(per key while SECRET_KEY_FALLBACKS is set), and one read more while users
are named by a field that can change (SESSION_CFKV_USER_FIELD other than
"pk": the marker of a move, :func:`moved`; in the json format, a bulk read
per 100 entries another user holds, :func:`_naming`); a revocation adds one
bulk delete per 10,000 keys (each session and its entry). Revoked sessions are
refused by this process at once, and by other processes and Workers once
their reads catch up: KV serves a deleted value at other locations for up to
about 60 seconds, and a listing may miss a session made in the last minute
or still show one signed out elsewhere for as long.

Each function is one plan (``plans``): the async twins (``auser_sessions``...)
await the same calls, with no thread.
"""

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from django.db import connections
from django.http import HttpRequest

from .. import clock, conf
from ..exceptions import CFKVConfigurationError, KVAPIError
from ..ratelimit.identity import arequest_user
from ..types import KeyInfo, PageWalk
from . import codec, index, keys, memory, options, plans
from .index import UserSession
from .plans import KVCall, Plan
from .tokens import token_store

NEVER = datetime.min.replace(tzinfo=timezone.utc)


def user_sessions(user: Any, *, request: HttpRequest | None = None) -> list[UserSession]:
    """Return the user's live sessions, cookie and bearer alike, the most recently seen first.

    With ``request``, the session of that request is marked ``current``.
    One list call per 1,000 sessions, and one read with a user field that can
    change (the marker of the user's last change of it; in the json format, a
    bulk read per 100 entries another user holds). Sessions signed out
    in this process are left out at once; a session signed out elsewhere may
    still be listed, and one made elsewhere in the last minute may be missing,
    for up to about 60 seconds (KV's listings are cached that long).
    """
    return plans.run(_user_sessions(user, request), _kv)


async def auser_sessions(user: Any, *, request: HttpRequest | None = None) -> list[UserSession]:
    """Async twin of :func:`user_sessions`."""
    return await plans.arun(_user_sessions(user, request), _akv)


def _user_sessions(user: Any, request: HttpRequest | None) -> Plan[list[UserSession]]:
    identity = user_identity(user)
    if identity is None:
        return []
    now = clock.now()
    found: dict[str, UserSession] = {}
    for prefix, infos in (yield from listings(identity, user_pk(user)))[0]:
        for info in infos:
            entry = index.read_entry(info, prefix, now)
            if entry is None or entry.ref in memory.recently_deleted:
                continue
            known = found.get(entry.ref)  # listed under SECRET_KEY and a fallback: the latest write wins
            if known is None or (entry.last_seen or NEVER) > (known.last_seen or NEVER):
                found[entry.ref] = entry
    current = ref_of(request)
    listed = [replace(entry, current=True) if entry.ref == current else entry for entry in found.values()]
    return sorted(listed, key=lambda entry: (entry.current, entry.last_seen or NEVER), reverse=True)


def revoke_session(user: Any, ref: str) -> bool:
    """Sign the user out of the session ``ref`` names (a ``ref`` from user_sessions()).

    Return False when the user has no such session. Only the user's own
    sessions can be revoked: ``ref`` must be in their index. One list call
    (and, with a user field that can change, one read of the marker of the
    user's last change of it when the session is not listed yet), then one
    bulk delete. Raise ValueError if ``ref`` is not of the form
    user_sessions() gives.
    """
    return plans.run(_revoke_session(user, ref), _kv)


async def arevoke_session(user: Any, ref: str) -> bool:
    """Async twin of :func:`revoke_session`."""
    return await plans.arun(_revoke_session(user, ref), _akv)


def _revoke_session(user: Any, ref: str) -> Plan[bool]:
    if not index.is_ref(ref):
        raise ValueError("ref must be a reference that user_sessions() returned (64 lowercase hex digits).")
    identity = user_identity(user)
    if identity is None:
        return False
    names, doubtful = [], []
    prefixes, held = index.user_prefixes(token_store().key_prefix(), identity), index.held_by(user_pk(user))
    for prefix in prefixes:
        page = yield KVCall("list_keys", prefix=prefix + ref, limit=10)
        listed = [info for info in page.keys if info.name == prefix + ref]
        names += [info.name for info in listed if held(info)]
        doubtful += [(prefix, info) for info in listed if not held(info)]
    names += [info.name for _, infos in (yield from _naming(identity, doubtful)) for info in infos]
    if prefixes[0] + ref not in names:  # maybe moved to this value in the last minute, and not listed yet
        marked = (yield from moved(identity, user_pk(user))) or []
        names += [info.name for info in marked if info.name == prefixes[0] + ref]
    if not names:
        return False
    yield from revoke({ref: names})
    return True


def revoke_other_sessions(request: HttpRequest) -> int:
    """Sign the request's user out of every session but the request's own; return how many were signed out.

    "Sign out other devices" without a password change. A password change
    (Django's update_session_auth_hash()) already ends the others at their
    next use, by the session auth hash; calling this as well removes them from
    KV and from the user's list at once.
    """
    return plans.run(_revoke_all(getattr(request, "user", None), ref_of(request)), _kv)


async def arevoke_other_sessions(request: HttpRequest) -> int:
    """Async twin of :func:`revoke_other_sessions`: the request's user is awaited (``request.auser()``), or
    the one login() or logout() set since, which Django 5.2 leaves ``auser()`` unaware of."""
    user = await arequest_user(request) if hasattr(request, "auser") else getattr(request, "user", None)
    return await plans.arun(_revoke_all(user, ref_of(request)), _akv)


def revoke_all_sessions(user: Any) -> int:
    """Sign the user out everywhere; return how many sessions were signed out.

    A request of this user's own is signed out too: its session reads as
    missing in this process from now on (call logout() to start it afresh).
    """
    return plans.run(_revoke_all(user, None), _kv)


async def arevoke_all_sessions(user: Any) -> int:
    """Async twin of :func:`revoke_all_sessions`."""
    return await plans.arun(_revoke_all(user, None), _akv)


def _kv() -> Any:
    return token_store().get_kv()


async def _akv() -> Any:
    return await token_store().aget_kv()


def user_identity(user: Any) -> str | None:
    """Return the ``userId`` (as text) that names ``user`` in the index, or None for an anonymous user."""
    if not options.user_index():
        raise CFKVConfigurationError(
            "SESSION_CFKV_USER_INDEX is False, so sessions are not indexed by user and a user's sessions "
            "cannot be found.", "django_cfkv.E205", "Set it to True (the default); sessions are indexed from "
            "their next sign-in or refresh.")
    if options.key_layout() != "hashed":
        raise CFKVConfigurationError(
            "SESSION_CFKV_KEY_LAYOUT is 'plain': a user's sessions are indexed in the hashed layout only.",
            "django_cfkv.W201", "Move sessions to the hashed layout (manage.py cfkv migrate-sessions).")
    if user is None or not getattr(user, "is_authenticated", False) or user.pk is None:
        return None
    field = conf.setting("SESSION_CFKV_USER_FIELD")
    # As the index's entries are written (a query's values_list): a related user field gives its id, not its object.
    return user._meta.pk.value_to_string(user) if field == "pk" else str(user.serializable_value(field))


def user_pk(user: Any) -> str:
    """Return the user's pk as text, as a session names its user (``_auth_user_id``) and a move marker its mover."""
    return str(user._meta.pk.value_to_string(user))


def listings(identity: str, owner: str, own: bool = False) -> Plan[tuple[list[tuple[str, list[KeyInfo]]], bool]]:
    """Return each prefix of the index listed under the ``userId`` ``identity`` with every key listed under it (one
    list call per 1,000) but entries another user holds (``index.held_by``: the value was theirs), and the entries
    the last move of the user ``owner``'s (pk as text) index to it wrote (:func:`moved`); and whether a marker of
    that move is there. With ``own``, only the entries that name ``owner`` as their holder."""
    found, doubtful = [], []
    prefixes = index.user_prefixes(token_store().key_prefix(), identity)
    held = (lambda info: index.holds(info.metadata, owner)) if own else index.held_by(owner)
    for prefix in prefixes:
        infos: list[KeyInfo] = []
        walk = PageWalk()
        while not walk.done:
            infos += walk.step((yield KVCall("list_keys", prefix=prefix, limit=1000, cursor=walk.cursor))).keys
        found.append((prefix, [info for info in infos if held(info)]))
        doubtful += [] if own else [(prefix, info) for info in infos if not held(info)]
    found += yield from _naming(identity, doubtful)
    marked = yield from moved(identity, owner)
    found.append((prefixes[0], marked or []))
    return found, marked is not None


def _naming(identity: str, doubtful: list[tuple[str, KeyInfo]]) -> Plan[list[tuple[str, list[KeyInfo]]]]:
    """Return the entries of ``doubtful`` (each with its prefix) that another user holds but whose session's
    ``userId`` is ``identity``: in the json format a session is the user's its ``userId`` names, as a Worker reads
    it, whoever signed in on it (as after a change no signal saw). A bulk read per 100 such entries; none in the
    signed format, where a session names its user by pk, as its holder does."""
    if not doubtful or options.session_format() != "json":
        return []
    store = token_store()
    refs = list(dict.fromkeys(ref for prefix, info in doubtful if index.is_ref(ref := info.name[len(prefix):])))
    try:
        values = (yield KVCall("get_many", [store.ref_key(ref) for ref in refs])) if refs else {}
    except KVAPIError as exc:
        # A binary value, which no session is (a namespace writer's), refuses the whole read: 400 from the emulator
        # and LocalKV, the status the reference expects (UNCERTAIN) from Cloudflare. Anything else raises.
        if type(exc) is not KVAPIError or exc.status != 400:
            raise
        values = {}
    naming = set()
    for ref in refs:
        value = codec.parse_or_none(values.get(store.ref_key(ref)), "json", store.key_salt_value())
        if value is not None and str(value.extra.get("userId")) == identity:
            naming.add(ref)
    return [(prefix, [info]) for prefix, info in doubtful if info.name[len(prefix):] in naming]


def moved(identity: str, owner: str) -> Plan[list[KeyInfo] | None]:
    """Return the entries the last move of the user ``owner``'s (pk as text) index to ``identity`` wrote
    (``sessions.value_change``), None when there is no marker of theirs: KV lists a key up to a minute after its
    write, so they are read from the move's marker. One read while users are named by a field that can change;
    none for a pk."""
    if conf.setting("SESSION_CFKV_USER_FIELD") == "pk":
        return None
    prefix = token_store().key_prefix()
    raw = yield KVCall("get", index.moved_key(prefix, identity))
    return index.read_moved(raw, index.user_prefixes(prefix, identity)[0], owner)


def ref_of(request: HttpRequest | None) -> str | None:
    """Return the ref of the request's own session, or None when it has none."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    return keys.hashed_id(session_key) if isinstance(session_key, str) else None


class PendingMove:
    """The on-commit move of the sessions of the user ``owner`` (pk as text) from their ``former`` value, which a
    save that changed it registers (``value_change``): until it runs they are still listed under that value."""

    def __init__(self, owner: str, former: str, run: Callable[[], None]) -> None:
        self.owner, self.former, self.run = owner, former, run

    def __call__(self) -> None:
        self.run()


def _revoke_all(user: Any, keep: str | None) -> Plan[int]:
    """Revoke every session of ``user`` but ``keep``, under their value and, in the transaction of a change of it,
    the entries they hold under the values their sessions stay under until its commit (signed out here, the move
    then passes them by); return how many live ones went."""
    identity = user_identity(user)
    if identity is None:
        return 0
    owner, count = user_pk(user), 0
    pending = _moves_pending(owner)
    # The first is the value they held before this transaction. One taken in it may still list its former holder's
    # sessions until the commit (two users swapping values): only the user's own entries, by holder, there.
    held = pending[0] if pending else identity
    for value in pending:
        if value != identity:
            count += yield from revoke_listed(value, owner, keep, own=value != held)
    return count + (yield from revoke_listed(identity, owner, keep, own=identity != held))


def _moves_pending(owner: str) -> list[str]:
    """Return the former values of the user ``owner`` (pk as text) whose moves wait for the commit of this thread's
    transactions, in the order of the changes (whichever instance of the user made them); a savepoint rolled back
    drops its own."""
    return list(dict.fromkeys(move.former for connection in connections.all(initialized_only=True)
                              for _, move, *_ in connection.run_on_commit
                              if isinstance(move, PendingMove) and move.owner == owner))


def revoke_listed(identity: str, owner: str, keep: str | None = None, own: bool = False) -> Plan[int]:
    """Revoke every session listed under the ``userId`` ``identity`` (the user ``owner``'s, pk as text) but ``keep``
    (with ``own``, those whose entry names them as holder); return how many live ones went."""
    now = clock.now()
    doomed: dict[str, list[str]] = {}
    live = set()
    found, marked = yield from listings(identity, owner, own)
    for prefix, infos in found:
        for info in infos:
            ref = info.name[len(prefix):]
            if index.is_ref(ref) and ref != keep:
                doomed.setdefault(ref, []).append(info.name)
                if index.read_entry(info, prefix, now) is not None:
                    live.add(ref)
    # Signed out everywhere: the user's move marker would list them again, elsewhere, for the rest of its life.
    marker = [index.moved_key(token_store().key_prefix(), identity)] if marked and keep is None else []
    yield from revoke(doomed, also=marker)
    return len(live)


def revoke(doomed: dict[str, list[str]], also: Sequence[str] = ()) -> Plan[None]:
    """Delete the sessions ``doomed`` names (ref -> its index entries) and the keys ``also``, in one bulk call;
    refuse the sessions here at once."""
    if not (doomed or also):
        return
    sessions = [token_store().ref_key(ref) for ref in doomed]
    try:
        with memory.writing(*sessions):
            # A name may come twice: listed, and in a move's marker.
            yield KVCall("delete_many", list(dict.fromkeys([*sessions, *(n for names in doomed.values() for n in names),
                                                            *also])))
    finally:  # refused here even if KV failed: a revocation errs on the side of signing out
        for ref in doomed:
            memory.recently_deleted.add(ref)
