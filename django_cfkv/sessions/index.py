"""The index of a user's sessions: one KV key per signed-in session, under a prefix of that user's own.

Beside each session (``SESSION_CFKV_KEY_PREFIX`` ``"session:"`` shown)::

    session:<ref>                   the session; ref = lowercase hex SHA-256 of its id (keys.hashed_id)
    session:user:<owner>:<ref>      its index entry: an empty value, and metadata saying what a listing shows

``owner`` names the user without saying who: the first 32 hex digits of
HMAC-SHA256(index key, the user's ``userId`` as text), where the index key is
HMAC-SHA256(SECRET_KEY, ``"django_cfkv.sessions.user_index"``). A Worker given
the index key (never SECRET_KEY itself: :func:`user_index_key`) finds the same
prefix. Finding a user's sessions is a listing of that prefix, one call per
1,000 of their sessions, never a listing of the namespace.

The metadata (``{"kind": "session", "expires", "created", "seen", "via",
"device", "where"}``, and ``"holder"`` while users are named by a field that
can change: :func:`holder`) holds no session id, token or user id, and stays far
under KV's 1,024 bytes: the device and place are cut to 64 characters and 256 bytes of JSON. The
entry carries its session's exact expiry and KV TTL, so it goes when the
session goes, and ``clearsessions`` and ``cfkv sweep`` remove what KV's TTL
leaves (the entry's kind is "session"). The store writes an entry before its
session, so no signed-in session is ever stored without one.

Kept only in the hashed layout: in the plain layout a session's key is its
id, which no entry may name.
"""

import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import conf, limits, metadata
from ..types import KeyInfo
from .options import key_layout, user_index

USER_SEGMENT = "user:"  # after the session prefix: what sets index entries apart from sessions
INDEX_SALT = b"django_cfkv.sessions.user_index"
OWNER_LENGTH = 32  # hex digits of the owner's HMAC: 128 bits
LAST_TIME = 32_503_680_000  # 3000-01-01 UTC: a later time in an entry is a writer's, not a session's
DEVICE_MAX, WHERE_MAX = 64, 64  # characters: the metadata stays under 1,024 bytes whatever a client sends
VIA = ("cookie", "bearer")
#: The session data key holding the client a session was signed in from (``{"via", "device", "where"}``).
CLIENT_KEY = "_cfkv_client"
_REF = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class UserSession:
    """One of a user's sessions, as :func:`django_cfkv.sessions.user_sessions` lists it."""

    #: An opaque reference for :func:`~django_cfkv.sessions.revoke_session` (never usable as a session id or token).
    ref: str
    #: ``"cookie"`` or ``"bearer"`` (a token from issue_token() or a Worker); None when not recorded.
    kind: str | None
    #: When the user signed in on it (None when not recorded).
    created: datetime | None
    #: When it was last written: its last use to within SESSION_CFKV_REFRESH_INTERVAL when every use
    #: refreshes it (bearer tokens, SESSION_SAVE_EVERY_REQUEST), else its last change.
    last_seen: datetime | None
    #: When it expires unless used again.
    expires: datetime | None
    #: A short description of the client from its User-Agent ("Firefox on Linux"), or "".
    device: str
    #: Where it signed in from: a country code (CF-IPCountry, through Cloudflare) or the client's
    #: network as the rate limiter groups addresses; or "".
    location: str
    #: True for the session of the request passed to user_sessions().
    current: bool = False


def enabled() -> bool:
    """Return True if sessions are indexed by user: SESSION_CFKV_USER_INDEX, in the hashed layout."""
    return user_index() and key_layout() == "hashed"


def _secrets() -> list[str]:
    return [conf.setting("SECRET_KEY"), *conf.setting("SECRET_KEY_FALLBACKS")]


def _index_key(secret: str) -> bytes:
    return hmac.new(str(secret).encode("utf-8", "surrogatepass"), INDEX_SALT, hashlib.sha256).digest()


def user_index_key() -> str:
    """Return the index key, hex: what a Worker needs to find a user's sessions. Keep it secret.

    Derived from SECRET_KEY (which it does not reveal): whoever holds it can
    tell which user an index entry belongs to by trying user ids, but cannot
    sign anything. It changes with SECRET_KEY.
    """
    return _index_key(conf.setting("SECRET_KEY")).hex()


def owner_name(identity: str, index_key: bytes) -> str:
    """Return the name an index gives the user whose ``userId`` is ``identity``."""
    return hmac.new(index_key, identity.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:OWNER_LENGTH]


def user_prefixes(prefix: str, identity: str) -> list[str]:
    """Return the key prefixes of the user's entries: under SECRET_KEY, then under each fallback.

    Entries written before a key rotation are found while the old key is in
    SECRET_KEY_FALLBACKS (each costs its own listing); new ones use SECRET_KEY.
    """
    return list(dict.fromkeys(_user_prefix(prefix, identity, secret) for secret in _secrets()))


def entry_key(prefix: str, identity: str, ref: str) -> str:
    """Return the KV key of the index entry of session ``ref`` for the user ``identity`` (under SECRET_KEY)."""
    return _user_prefix(prefix, identity, _secrets()[0]) + ref


def _user_prefix(prefix: str, identity: str, secret: str) -> str:
    return f"{prefix}{USER_SEGMENT}{owner_name(identity, _index_key(secret))}:"


def is_ref(value: object) -> bool:
    """Return True if ``value`` has the form of a session reference (64 lowercase hex digits)."""
    return isinstance(value, str) and _REF.fullmatch(value) is not None


# What an entry holds


def clean_text(value: object, limit: int) -> str:
    """Return ``value`` as one line of printable text of at most ``limit`` characters, and at most ``4 * limit``
    bytes as JSON, as KV measures metadata ("" if not text)."""
    if not isinstance(value, str):
        return ""
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in value[:limit * 4])
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
    while len(json.dumps(text)) > 4 * limit:  # JSON escapes an emoji (a Worker's field) as 12 bytes
        text = text[:-2].rstrip() + "…"
    return text


def client_fields(value: object) -> dict[str, str]:
    """Return the client a session records (its CLIENT_KEY data), each field checked: whoever wrote it."""
    value = value if isinstance(value, dict) else {}
    via = value.get("via")
    return {"via": via if via in VIA else "", "device": clean_text(value.get("device"), DEVICE_MAX),
            "where": clean_text(value.get("where"), WHERE_MAX)}


def entry_metadata(expires: float, created_ms: float | None, now: float, client: object,
                   user: str | None) -> dict[str, Any]:
    """Return the metadata of an index entry: the session's expiry, its sign-in and last write, its client, and
    the :func:`holder` of Django's user ``user`` (pk as text; None for a session no user of Django's signed in)."""
    extra: dict[str, Any] = {} if created_ms is None else {"created": int(created_ms // 1000)}
    extra["seen"] = int(now)
    extra.update((name, text) for name, text in client_fields(client).items() if text)
    extra.update(holder(user))
    return metadata.build(metadata.SESSION, expires=expires, **extra)


# Who an entry belongs to. A user's value (an email) can pass to another user while KV still lists the entries
# left under it, for about a minute after a move, or until `manage.py cfkv sessions --former` for a change no
# signal saw. So while users are named by a field that can change, each entry Django writes names its user by an
# HMAC of their pk, which no change alters, and listings (per_user.listings) leave out another user's.

HOLDER = "holder"


def holder(user: str | None) -> dict[str, str]:
    """Return the metadata naming Django's user ``user`` (pk as text) as an entry's holder: nothing for None, or
    while users are named by pk (their prefix names them already)."""
    if user is None or conf.setting("SESSION_CFKV_USER_FIELD") == "pk":
        return {}
    return {HOLDER: _holder(user, _secrets()[0])}


def _holder(user: str, secret: str) -> str:
    return owner_name("pk:" + user, _index_key(secret))  # "pk:": never a userId's own name


def holds(meta: object, user: str) -> bool:
    """Return True if the metadata ``meta`` names Django's user ``user`` (pk as text) as its holder."""
    named = meta.get(HOLDER) if isinstance(meta, dict) else None
    return isinstance(named, str) and named in _holders(user)


def _holders(user: str) -> set[str]:
    return {_holder(user, secret) for secret in _secrets()}


def held_by(user: str) -> Callable[[KeyInfo], bool]:
    """Return a test of a listed entry: False when it names a holder other than Django's user ``user`` (pk as text),
    under SECRET_KEY or a fallback; True when it names none (a Worker's entry, or one written before holders were)."""
    theirs = _holders(user)

    def test(info: KeyInfo) -> bool:
        named = info.metadata.get(HOLDER) if isinstance(info.metadata, dict) else None
        return named is None or (isinstance(named, str) and named in theirs)
    return test


def _time(value: object) -> datetime | None:
    # Years 1970 to 2999 only: a writer's year-9999 time overflows when a template shows it in a time zone east
    # of UTC (year 1 west of it), and no session is seen, made or ends outside them.
    if not (limits.is_finite_number(value) and 0 <= value < LAST_TIME):
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc)


def read_entry(info: KeyInfo, user_prefix: str, now: float) -> UserSession | None:
    """Return the live session an index entry describes, or None (expired, or not an entry of this form)."""
    ref = info.name[len(user_prefix):]
    meta = metadata.read(info.metadata)
    if not info.name.startswith(user_prefix) or not is_ref(ref) or not meta.is_live(now):
        return None
    fields, client = meta.fields, client_fields(meta.fields)
    return UserSession(ref=ref, kind=client["via"] or None, created=_time(fields.get("created")),
                       last_seen=_time(fields.get("seen")), expires=_time(meta.expires),
                       device=client["device"], location=client["where"])


# What a move of a user's index wrote (sessions.value_change): KV lists a key up to a minute after its write, so every
# listing of the user's sessions (per_user.moved) reads the entries the last move wrote from this marker, by its name.
# It names the user who moved (their pk): whoever else holds the value, before or after them, reads none of it.

MOVED = "moved"  # after a user's prefix: not a ref, so no listing of sessions takes it for an entry
MOVED_TTL = 120  # seconds: past KV's listing lag (about 60 s)


def moved_key(prefix: str, identity: str) -> str:
    """Return the key of the marker of the last move of an index to the user ``identity`` (under SECRET_KEY)."""
    return _user_prefix(prefix, identity, _secrets()[0]) + MOVED


def moved_marker(prefix: str, identity: str, owner: str, entries: list[tuple[str, Any]], now: float) -> dict[str, Any]:
    """Return the bulk-write item of the marker of the user ``owner``'s (pk as text) move to ``identity``: each entry's
    name and metadata."""
    text = json.dumps({"user": owner, "entries": [[name, meta] for name, meta in entries]}, separators=(",", ":"))
    return {"key": moved_key(prefix, identity), "value": text, "expiration_ttl": MOVED_TTL,
            "metadata": metadata.build(metadata.SESSION, expires=now + MOVED_TTL)}


def read_moved(raw: bytes | None, user_prefix: str, owner: str) -> list[KeyInfo] | None:
    """Return the entries the move marker ``raw`` of the user ``owner`` (pk as text) names under ``user_prefix``;
    None when ``raw`` is no marker of theirs (another user's, none, or a value that is not one)."""
    try:
        marker = limits.loads_json(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(marker, dict) or marker.get("user") != owner or not isinstance(marker.get("entries"), list):
        return None
    items = marker["entries"]
    return [KeyInfo(name, None, meta) for name, meta in (item for item in items if isinstance(item, list) and
                                                          len(item) == 2)
            if isinstance(name, str) and name.startswith(user_prefix)]
