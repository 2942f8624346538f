"""How the cache stores an entry in Workers KV: one UTF-8 JSON object.

KV's bulk get returns text only, so every entry is text, and it carries its
exact expiry because KV's own TTL cannot go below 60 seconds::

    {"expires": 1767225600.25, "delta": 0.2, "value": {"any": "JSON"}}   SERIALIZER "json"
    {"expires": null, "pickle": "gASVDQAAAAAAAACMCWhlbGxv...", "sig": "..."}  SERIALIZER "pickle" (base64)
    {"expires": ..., "zlib": "eJyr...", "format": "json"|"pickle"}       compressed (base64 of zlib)

``expires`` is the exact expiry in epoch seconds (``null``: never). ``delta``,
present on entries written by ``get_or_set``/``cached``, is how many seconds
the value took to compute (used for early recomputation). A Worker reading a
JSON entry with ``env.KV.get(key, "json")`` finds the value under ``value``.

Unpickling runs code chosen by whoever wrote the bytes, and anyone who can
write the namespace can write them. So every entry of the "pickle"
serializer ends with ``"sig"``: an HMAC-SHA256 of the KV key and of the
entry's text before it, keyed from ``SECRET_KEY`` with a salt of its own (as
``django.core.signing`` derives its keys). Bytes reach ``pickle.loads`` only
after that signature checks out with ``SECRET_KEY`` or one of
``SECRET_KEY_FALLBACKS``; binding the KV key means a signed entry copied under
another key is refused too. JSON entries are not signed, so Workers can read
and write them.
"""

import base64
import binascii
import functools
import hashlib
import hmac
import json
import pickle
import zlib
from typing import Any, NamedTuple

from django.utils.encoding import force_bytes

from .. import conf, limits, metadata
from ..exceptions import KVValueError

SERIALIZERS = ("pickle", "json")

#: The most bytes a compressed entry may hold once inflated. A JSON entry is not signed, so anyone
#: who can write the namespace could plant a few kilobytes of zlib that inflate to gigabytes.
MAX_INFLATED_BYTES = 4 * limits.MAX_VALUE_BYTES

# Named after the module's first home; changing it would make every stored entry a miss.
SIGNATURE_SALT = b"django_cfkv.serializers.EntryCodec.signer"
_SIG_HEAD = b',"sig":"'
_SIG_CHARS = 43  # urlsafe base64 of a SHA-256 digest, without padding
_SIG_TAIL = len(_SIG_HEAD) + _SIG_CHARS + 2  # ,"sig":"<43>"}


class SignatureError(ValueError):
    """An entry that must be signed with the site's secret is unsigned or badly signed."""


class Entry(NamedTuple):
    """A decoded cache entry: value, exact expiry (epoch seconds or None), compute time (or None)."""

    value: Any
    expires: float | None
    delta: float | None

    def is_live(self, now: float) -> bool:
        """Return True if the entry has not expired at ``now``."""
        return self.expires is None or self.expires > now


class EntryCodec:
    """Turn values into entry text and back, with one serializer and optional compression."""

    def __init__(self, serializer: str = "pickle", compress_min_bytes: int | None = None) -> None:
        if serializer not in SERIALIZERS:
            choices = " or ".join(map(repr, SERIALIZERS))
            raise ValueError(f"SERIALIZER must be {choices}; got {serializer!r}.")
        if compress_min_bytes is not None and (
                isinstance(compress_min_bytes, bool) or not isinstance(compress_min_bytes, int)
                or compress_min_bytes < 0):
            raise ValueError("COMPRESS_MIN_BYTES must be None (no compression) or a whole number of bytes, "
                             f"0 or more, such as 1024; got {compress_min_bytes!r}.")
        self.serializer = serializer
        self.compress_min_bytes = compress_min_bytes

    def dumps(self, value: Any, expires: float | None, delta: float | None = None, *, kv_key: str,
              key: str = "") -> str:
        """Return the entry's text for the KV key ``kv_key``, or raise a clear error if it cannot be stored.

        Entries of the "pickle" serializer are signed (see the module's docstring).
        """
        fields: dict[str, Any] = {"expires": _round(expires)}
        if delta is not None:
            fields["delta"] = round(delta, 4)
        if self.serializer == "pickle":
            # Errors from pickle (PicklingError, TypeError) propagate unchanged, as on Django's backends.
            payload: bytes | str = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        else:
            try:
                payload = limits.dumps_json(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"Cannot cache {type(value).__name__} for key {key!r} with SERIALIZER 'json' ({exc}). "
                    "Store JSON types only (dict, list, str, int, float, bool, None) or use 'pickle'."
                ) from exc
        if self.compress_min_bytes is not None and len(payload) >= self.compress_min_bytes:
            raw = payload if isinstance(payload, bytes) else payload.encode("utf-8")
            if len(raw) > MAX_INFLATED_BYTES:
                raise KVValueError(
                    f"Cache value for key {key!r} is {len(raw)} bytes serialized; a compressed entry may hold "
                    f"at most {MAX_INFLATED_BYTES} bytes (100 MiB) once inflated. Cache less."
                )
            fields["zlib"] = base64.b64encode(zlib.compress(raw)).decode("ascii")
            fields["format"] = self.serializer
        elif isinstance(payload, bytes):  # pickled
            fields["pickle"] = base64.b64encode(payload).decode("ascii")
        else:
            fields["value"] = _Raw(payload)
        text = _dump_fields(fields)
        if self.serializer == "pickle":
            text = sign(text, kv_key)
        size = len(text.encode("utf-8"))
        if size > limits.MAX_VALUE_BYTES:
            raise KVValueError(
                f"Cache value for key {key!r} is {size} bytes once encoded; Workers KV stores at most "
                f"{limits.MAX_VALUE_BYTES} bytes (25 MiB). Cache less, or set OPTIONS['COMPRESS_MIN_BYTES']."
            )
        return text

    def loads(self, raw: bytes | str, kv_key: str) -> "Entry":
        """Return the :class:`Entry` that ``raw`` read from ``kv_key`` holds, as this cache may read it.

        A cache that pickles reads signed entries only, so no one without the
        secret can plant a value in it (a JSON one included). Raise
        SignatureError for an entry refused for its signature, ValueError for
        anything else that is not a cache entry.
        """
        return load_entry(raw, kv_key, require_signature=self.serializer == "pickle")


class DecodedEntry(NamedTuple):
    """A cache entry as ``manage.py cfkv`` and other tools see it: ``value, expires = ...``."""

    value: Any
    expires: float | None


def decode_entry(raw: bytes | str, key: str) -> DecodedEntry:
    """Return ``(value, expires)`` of the cache entry ``raw`` (bytes or text) stored under the KV key ``key``.

    ``expires`` is the exact expiry in epoch seconds, or None for never. Raise
    ValueError if ``raw`` is not a cache entry, and SignatureError (a
    ValueError) if it is a pickled entry not signed for ``key`` with this
    site's secret: such bytes are never unpickled.
    """
    entry = load_entry(raw, key)
    return DecodedEntry(entry.value, entry.expires)


def load_entry(raw: bytes | str, kv_key: str, *, require_signature: bool = False) -> Entry:
    """Return the :class:`Entry` stored in ``raw`` (bytes or str) under ``kv_key``.

    A pickled entry is unpickled only if its signature is valid for
    ``kv_key``; with ``require_signature`` every entry must be signed. Raise
    SignatureError when the signature is missing or wrong, ValueError when
    ``raw`` is not a cache entry.
    """
    body, signed = verified_body(raw, kv_key)
    fields = parse_fields(body)
    pickled = "pickle" in fields or ("zlib" in fields and fields.get("format") == "pickle")
    if not signed and (pickled or require_signature):
        raise SignatureError("unsigned entry where a signed one is required")
    if "value" in fields:
        value = fields["value"]
    elif "pickle" in fields:
        value = pickle.loads(_b64(fields["pickle"]))
    elif "zlib" in fields:
        payload = _inflate(_b64(fields["zlib"]))
        value = pickle.loads(payload) if fields.get("format") == "pickle" else limits.loads_json(payload)
    else:
        raise ValueError("Not a cache entry: it has no 'value', 'pickle' or 'zlib' field.")
    return Entry(value, fields.get("expires"), fields.get("delta"))


def parse_fields(raw: bytes | str) -> dict[str, Any]:
    """Return an entry's JSON object without decoding its value."""
    try:
        fields = limits.loads_json(raw)
    except ValueError as exc:
        raise ValueError(f"Not a cache entry: not JSON text ({type(exc).__name__}).") from exc
    if not isinstance(fields, dict) or "expires" not in fields:
        raise ValueError("Not a cache entry: a JSON object with 'expires' was expected.")
    if any(fields.get(name) is not None and not limits.is_finite_number(fields[name]) for name in ("expires", "delta")):
        raise ValueError("Not a cache entry: its 'expires' or 'delta' is not a number.")
    return fields


def retime(raw: bytes | str, expires: float | None, kv_key: str) -> str:
    """Return the entry text ``raw`` of ``kv_key`` with a new expiry, its value left byte-for-byte as is.

    A signed entry is signed again (with the current SECRET_KEY); a bad signature raises SignatureError.
    """
    body, signed = verified_body(raw, kv_key)
    fields = parse_fields(body)
    fields["expires"] = _round(expires)
    text = limits.dumps_json(fields)
    return sign(text, kv_key) if signed else text


# Signatures

def sign(text: str, kv_key: str) -> str:
    """Return the entry text ``text`` (a JSON object) with a ``"sig"`` field made with SECRET_KEY."""
    signature = _signature(_signing_keys()[0], kv_key, text.encode("utf-8"))
    return f'{text[:-1]}{_SIG_HEAD.decode()}{signature}"}}'


def verified_body(raw: bytes | str, kv_key: str) -> tuple[bytes, bool]:
    """Return (entry bytes without the signature, True) for an entry signed for ``kv_key``, (raw, False)
    for an unsigned one. Raise SignatureError if it has a signature that no secret made.
    """
    raw = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    cut = len(raw) - _SIG_TAIL
    if cut < 1 or raw[-2:] != b'"}' or raw[cut:cut + len(_SIG_HEAD)] != _SIG_HEAD:
        return raw, False
    body, given = raw[:cut] + b"}", raw[cut + len(_SIG_HEAD):-2]
    for key in _signing_keys():  # SECRET_KEY, then SECRET_KEY_FALLBACKS: rotation keeps entries readable
        if hmac.compare_digest(_signature(key, kv_key, body).encode("ascii"), given):
            return body, True
    raise SignatureError("bad signature: not made with SECRET_KEY or SECRET_KEY_FALLBACKS for this KV key")


def _signature(key: bytes, kv_key: str, body: bytes) -> str:
    # The KV key goes first with its length, so no key and body can pass for another pair.
    name = kv_key.encode("utf-8")
    digest = hmac.digest(key, b"%d:%s%s" % (len(name), name, body), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _signing_keys() -> list[bytes]:
    """Return the derived keys of SECRET_KEY and each of SECRET_KEY_FALLBACKS, current first."""
    return [_derive(secret) for secret in (conf.setting("SECRET_KEY"), *conf.setting("SECRET_KEY_FALLBACKS"))]


@functools.lru_cache(maxsize=16)
def _derive(secret: str | bytes) -> bytes:
    # As django.utils.crypto.salted_hmac: a key of its own per use, never SECRET_KEY itself.
    return hashlib.sha256(SIGNATURE_SALT + force_bytes(secret)).digest()


class _Raw(str):
    """JSON text spliced into the entry as is (so the value is serialized once)."""


def _dump_fields(fields: dict[str, Any]) -> str:
    parts = []
    for name, value in fields.items():
        text = value if isinstance(value, _Raw) else json.dumps(value)
        parts.append(f"{json.dumps(name)}:{text}")
    return "{" + ",".join(parts) + "}"


def _round(expires: float | None) -> float | None:
    """Return ``expires`` cut to milliseconds, rounding down so a ttl never exceeds its timeout
    (always a float: an entry has always stored ``1767225600.0``, never ``1767225600``)."""
    return None if expires is None else metadata.exact(float(expires))


def _inflate(data: bytes) -> bytes:
    """Return zlib ``data`` inflated, refusing more than MAX_INFLATED_BYTES (a zlib bomb) without making them."""
    inflater = zlib.decompressobj()
    try:
        payload = inflater.decompress(data, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"Corrupt compressed cache entry: {exc}") from exc
    if len(payload) > MAX_INFLATED_BYTES:
        raise ValueError(f"Compressed cache entry inflates past {MAX_INFLATED_BYTES} bytes.")
    if not inflater.eof:
        raise ValueError("Corrupt compressed cache entry: truncated.")
    return payload


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError) as exc:
        raise ValueError(f"Corrupt cache entry: bad base64 ({exc}).") from exc
