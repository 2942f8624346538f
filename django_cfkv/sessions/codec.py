"""A session's stored value: reading it, writing it, and the canonical form that tells a change.

Two formats (``SESSION_CFKV_FORMAT``):

* ``"signed"`` (default): Django's signed, compressed encoding of
  ``{"createdAt", "expiresAt", "data"}`` (and ``absoluteExpiresAt``), naming the
  hash of the session id it was written for (``keyHash``); a tampered value,
  or one copied to another key, is refused.
* ``"json"``: plain JSON a Worker reads with ``env.SESSIONS.get(key, "json")``:
  ``{"userId", "createdAt", "expiresAt", "data"}`` (times in epoch ms), beside
  any top-level fields a Worker wrote (``email``...).
"""

import json
from typing import Any, NamedTuple

from django.core import signing
from django.utils.module_loading import import_string

from .. import conf, limits
from ..limits import is_finite_number, loads_json
from .keys import hashed_id
from .options import session_format

RESERVED = ("createdAt", "expiresAt", "absoluteExpiresAt", "data")


class Value(NamedTuple):
    """A parsed session value."""

    data: dict[str, Any]  # Django's session dict ("data")
    expires: float | None  # epoch s: expiresAt, never past the absolute end
    created: float | None  # epoch ms, as stored (createdAt)
    extra: dict[str, Any]  # the top-level fields beside the reserved ones (JSON format: userId, email...)
    ends: float | None  # epoch s: the absolute end (absoluteExpiresAt), if any


def salt_for(store_name: str) -> str:
    """Return the signing salt of the session store class named ``store_name`` (its ``__qualname__``)."""
    return "django.contrib.sessions." + store_name


def parse(raw: bytes | bytearray | memoryview | str, fmt: str, salt: str, session_key: str | None = None) -> Value:
    """Return the Value in ``raw``, or raise ValueError saying why it cannot be read.

    A signed value names the session key it was written for (its hash): one
    copied to another key by someone who can write the namespace is refused.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the session value is not UTF-8 text") from None
    envelope = _signed_envelope(raw, salt) if fmt == "signed" else _json_envelope(raw)
    if not isinstance(envelope, dict):
        raise ValueError("the session value is not an object")
    written_for = envelope.get("keyHash") if fmt == "signed" else None  # absent: written before it was added
    if written_for is not None and session_key is not None and written_for != hashed_id(session_key):
        raise ValueError("the session value was written for another session key")
    data = envelope.get("data", {})
    times = [envelope.get(name) for name in ("expiresAt", "absoluteExpiresAt", "createdAt")]
    if not isinstance(data, dict) or not all(_is_number(t, optional=True) for t in times):
        raise ValueError("the session value has a malformed data, expiresAt, absoluteExpiresAt or createdAt field")
    expires, ends = (None if t is None else t / 1000 for t in times[:2])
    if ends is not None:  # a Worker may have slid expiresAt past the end: the end wins
        expires = ends if expires is None else min(expires, ends)
    extra = {k: v for k, v in envelope.items() if k not in RESERVED} if fmt == "json" else {}
    return Value(data, expires, times[2], extra, ends)


def parse_or_none(raw: bytes | None, fmt: str, salt: str) -> Value | None:
    """Return the Value in ``raw``, or None when it is missing or cannot be read (whoever wrote it)."""
    try:
        return None if raw is None else parse(raw, fmt, salt)
    except ValueError:
        return None


def _signed_envelope(raw: str, salt: str) -> Any:
    try:
        return signing.loads(raw, salt=salt, serializer=serializer())
    except signing.BadSignature as exc:
        raise ValueError("the session value's signature is invalid") from exc
    except Exception as exc:  # what the serializer raises on garbage varies
        raise ValueError(f"the session value cannot be decoded: {type(exc).__name__}") from exc


def _json_envelope(raw: str) -> Any:
    try:
        return loads_json(raw)
    except ValueError as exc:
        raise ValueError("the session value is not JSON") from exc


def _is_number(value: object, optional: bool = False) -> bool:
    return optional if value is None else is_finite_number(value)


def dumps_signed(envelope: dict[str, Any], salt: str, serializer: Any, session_key: str) -> str:
    """Return the signed value of ``envelope``, bound to ``session_key`` (its hash, ``keyHash``)."""
    envelope["keyHash"] = hashed_id(session_key)
    return signing.dumps(envelope, salt=salt, serializer=serializer, compress=True)


def dumps_json(envelope: dict[str, Any]) -> str:
    """Return the JSON value of ``envelope`` (compact, UTF-8 text as it is)."""
    return limits.dumps_json(envelope)


def canonical(data: dict[str, Any], fmt: str, serializer: Any) -> str | bytes:
    """Return ``data`` in a form that compares equal exactly when the data is the same (what save() compares)."""
    if fmt == "json":
        return json.dumps(data, separators=(",", ":"), sort_keys=True)
    return serializer().dumps(data)


def serializer() -> Any:
    """Return the SESSION_SERIALIZER class."""
    return import_string(conf.setting("SESSION_SERIALIZER"))


def decode_value(raw: bytes | str, format: str | None = None) -> tuple[dict[str, Any], float | None]:
    """Return ``(session_dict, expires)`` for a stored session value.

    ``raw`` is the value's bytes (or text), ``format`` "signed" or "json"
    (default: SESSION_CFKV_FORMAT); ``expires`` is epoch seconds, or None when
    the value carries no expiry. For the JSON format the dict holds the
    Worker's top-level fields (``userId``, ``email``...) beside
    ``data``'s entries. Raise ValueError, saying why, if the value cannot be
    read (bad signature, not JSON, malformed fields).
    """
    value = parse(raw, format or session_format(), salt_for("SessionStore"))
    view = dict(value.extra)
    view.update(value.data)
    return view, value.expires
