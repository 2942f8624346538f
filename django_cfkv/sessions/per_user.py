"""A user's sessions: list them, sign out one, the others or all of them.

Every session a user signs in on (a cookie session or a bearer token, made by
Django or by a Worker keeping the same layout) has an entry in the user's
index (:mod:`~django_cfkv.sessions.index`), so these functions list one prefix
of the namespace, never the whole of it.

API calls: listing a user's sessions costs one list call per 1,000 of them
(per key while SECRET_KEY_FALLBACKS is set); a revocation adds one bulk
delete per 10,000 keys (each session and its entry). Revoked sessions are
refused by this process at once, and by other processes and Workers once
their reads catch up: KV serves a deleted value at other locations for up to
about 60 seconds, and a listing may miss a session made in the last minute
or still show one signed out elsewhere for as long.
"""

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from .. import clock, conf
from ..exceptions import CFKVConfigurationError
from . import index, keys, memory, options
from .index import UserSession
from .store import SessionStore
from .tokens import token_store

_NEVER = datetime.min.replace(tzinfo=timezone.utc)


def user_sessions(user: Any, *, request: HttpRequest | None = None) -> list[UserSession]:
    """Return the user's live sessions, cookie and bearer alike, the most recently seen first.

    With ``request``, the session of that request is marked ``current``.
    One list call per 1,000 sessions. Sessions signed out in this process
    are left out at once; a session signed out elsewhere may still be listed,
    and one made elsewhere in the last minute may be missing, for up to about
    60 seconds (KV's listings are cached that long).
    """
    identity = _identity(user)
    if identity is None:
        return []
    store, now = token_store(), clock.now()
    found: dict[str, UserSession] = {}
    for prefix, infos in _listings(store, identity):
        for info in infos:
            entry = index.read_entry(info, prefix, now)
            if entry is None or entry.ref in memory.recently_deleted:
                continue
            known = found.get(entry.ref)  # listed under SECRET_KEY and a fallback: the latest write wins
            if known is None or (entry.last_seen or _NEVER) > (known.last_seen or _NEVER):
                found[entry.ref] = entry
    current = _ref_of(request)
    listed = [replace(entry, current=True) if entry.ref == current else entry for entry in found.values()]
    return sorted(listed, key=lambda entry: (entry.current, entry.last_seen or _NEVER), reverse=True)


def revoke_session(user: Any, ref: str) -> bool:
    """Sign the user out of the session ``ref`` names (a ``ref`` from user_sessions()).

    Return False when the user has no such session. Only the user's own
    sessions can be revoked: ``ref`` must be in their index. One list call,
    then one bulk delete. Raise ValueError if ``ref`` is not of the form
    user_sessions() gives.
    """
    if not index.is_ref(ref):
        raise ValueError("ref must be a reference that user_sessions() returned (64 lowercase hex digits).")
    identity = _identity(user)
    if identity is None:
        return False
    store = token_store()
    kv = store.get_kv()
    names = [info.name for prefix in index.user_prefixes(store.key_prefix(), identity)
             for info in kv.list_keys(prefix=prefix + ref, limit=10).keys if info.name == prefix + ref]
    if not names:
        return False
    _revoke(store, {ref: names})
    return True


def revoke_other_sessions(request: HttpRequest) -> int:
    """Sign the request's user out of every session but the request's own; return how many were signed out.

    "Sign out other devices" without a password change. A password change
    (Django's update_session_auth_hash()) already ends the others at their
    next use, by the session auth hash; calling this as well removes them from
    KV and from the user's list at once.
    """
    keep = _ref_of(request)
    return _revoke_all(getattr(request, "user", None), keep)


def revoke_all_sessions(user: Any) -> int:
    """Sign the user out everywhere; return how many sessions were signed out.

    A request of this user's own is signed out too: its session reads as
    missing in this process from now on (call logout() to start it afresh).
    """
    return _revoke_all(user, None)


async def auser_sessions(user: Any, *, request: HttpRequest | None = None) -> list[UserSession]:
    """Async twin of :func:`user_sessions`: for now it runs it in a thread (sync_to_async), until KV calls are
    native async; the call stays the same when they are."""
    return await sync_to_async(user_sessions)(user, request=request)


async def arevoke_session(user: Any, ref: str) -> bool:
    """Async twin of :func:`revoke_session` (in a thread for now, as :func:`auser_sessions`)."""
    return await sync_to_async(revoke_session)(user, ref)


async def arevoke_other_sessions(request: HttpRequest) -> int:
    """Async twin of :func:`revoke_other_sessions` (in a thread for now, as :func:`auser_sessions`).

    Load the user first (``await request.auser()``): a thread cannot.
    """
    return await sync_to_async(revoke_other_sessions)(request)


async def arevoke_all_sessions(user: Any) -> int:
    """Async twin of :func:`revoke_all_sessions` (in a thread for now, as :func:`auser_sessions`)."""
    return await sync_to_async(revoke_all_sessions)(user)


def _identity(user: Any) -> str | None:
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
    return user._meta.pk.value_to_string(user) if field == "pk" else str(getattr(user, field))


def _listings(store: type[SessionStore], identity: str) -> list[tuple[str, Any]]:
    kv = store.get_kv()
    return [(prefix, kv.iter_keys(prefix=prefix)) for prefix in index.user_prefixes(store.key_prefix(), identity)]


def _ref_of(request: HttpRequest | None) -> str | None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    return keys.hashed_id(session_key) if isinstance(session_key, str) else None


def _revoke_all(user: Any, keep: str | None) -> int:
    """Revoke every session of ``user`` but ``keep``; return how many live ones went."""
    identity = _identity(user)
    if identity is None:
        return 0
    store, now = token_store(), clock.now()
    doomed: dict[str, list[str]] = {}
    live = set()
    for prefix, infos in _listings(store, identity):
        for info in infos:
            ref = info.name[len(prefix):]
            if index.is_ref(ref) and ref != keep:
                doomed.setdefault(ref, []).append(info.name)
                if index.read_entry(info, prefix, now) is not None:
                    live.add(ref)
    _revoke(store, doomed)
    return len(live)


def _revoke(store: type[SessionStore], doomed: dict[str, list[str]]) -> None:
    """Delete the sessions ``doomed`` names (ref -> its index entries), in bulk; refuse them here at once."""
    if not doomed:
        return
    sessions = [store.ref_key(ref) for ref in doomed]
    try:
        store.get_kv().delete_many([*sessions, *(name for names in doomed.values() for name in names)])
    finally:  # refused here even if KV failed: a revocation errs on the side of signing out
        memory.forget_nearby(*sessions)
        for ref in doomed:
            memory.recently_deleted.add(ref)
