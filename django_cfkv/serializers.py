"""How the cache stores an entry in Workers KV: one UTF-8 JSON object.

KV's bulk get returns text only, so every entry is text, and it carries its
exact expiry because KV's own TTL cannot go below 60 seconds::

    {"expires": 1767225600.25, "delta": 0.2, "value": {"any": "JSON"}}   SERIALIZER "json"
    {"expires": null, "pickle": "gASVDQAAAAAAAACMCWhlbGxv..."}         SERIALIZER "pickle" (base64)
    {"expires": ..., "zlib": "eJyr...", "format": "json"|"pickle"}       compressed (base64 of zlib)

``expires`` is the exact expiry in epoch seconds (``null``: never). ``delta``,
present on entries written by ``get_or_set``/``cached``, is how many seconds
the value took to compute (used for early recomputation). A Worker reading a
JSON entry with ``env.KV.get(key, "json")`` finds the value under ``value``.
"""

import base64
import binascii
import json
import math
import pickle
import zlib
from typing import Any, NamedTuple

from . import limits
from .exceptions import KVValueError

SERIALIZERS = ("pickle", "json")


class Entry(NamedTuple):
    """A decoded cache entry: value, exact expiry (epoch seconds or None), compute time (or None)."""

    value: Any
    expires: float | None
    delta: float | None

    def is_live(self, now):
        """Return True if the entry has not expired at ``now``."""
        return self.expires is None or self.expires > now


class EntryCodec:
    """Turn values into entry text and back, with one serializer and optional compression."""

    def __init__(self, serializer="pickle", compress_min_bytes=None):
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

    def dumps(self, value, expires, delta=None, *, key=""):
        """Return the entry's text, or raise a clear error if it cannot be stored."""
        fields = {"expires": _round(expires)}
        if delta is not None:
            fields["delta"] = round(delta, 4)
        if self.serializer == "pickle":
            # Errors from pickle (PicklingError, TypeError) propagate unchanged, as on Django's backends.
            payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        else:
            try:
                payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"Cannot cache {type(value).__name__} for key {key!r} with SERIALIZER 'json' ({exc}). "
                    "Store JSON types only (dict, list, str, int, float, bool, None) or use 'pickle'."
                ) from exc
        if self.compress_min_bytes is not None and len(payload) >= self.compress_min_bytes:
            raw = payload if isinstance(payload, bytes) else payload.encode("utf-8")
            fields["zlib"] = base64.b64encode(zlib.compress(raw)).decode("ascii")
            fields["format"] = self.serializer
        elif self.serializer == "pickle":
            fields["pickle"] = base64.b64encode(payload).decode("ascii")
        else:
            fields["value"] = _Raw(payload)
        text = _dump_fields(fields)
        size = len(text.encode("utf-8"))
        if size > limits.MAX_VALUE_BYTES:
            raise KVValueError(
                f"Cache value for key {key!r} is {size} bytes once encoded; Workers KV stores at most "
                f"{limits.MAX_VALUE_BYTES} bytes (25 MiB). Cache less, or set OPTIONS['COMPRESS_MIN_BYTES']."
            )
        return text


class DecodedEntry(NamedTuple):
    """A cache entry as ``manage.py cfkv`` and other tools see it: ``value, expires = ...``."""

    value: Any
    expires: float | None


def decode_entry(raw):
    """Return ``(value, expires)`` of a stored cache entry given its bytes (or text).

    ``expires`` is the exact expiry in epoch seconds, or None for never. Raise
    ValueError if ``raw`` is not a cache entry. Pickled entries are unpickled:
    decode only entries from a namespace you trust.
    """
    entry = load_entry(raw)
    return DecodedEntry(entry.value, entry.expires)


def load_entry(raw):
    """Return the :class:`Entry` stored in ``raw`` (bytes or str).

    Raise ValueError if ``raw`` is not a cache entry. Unpickles pickled
    entries: only decode entries from a namespace you trust.
    """
    fields = parse_fields(raw)
    if "value" in fields:
        value = fields["value"]
    elif "pickle" in fields:
        value = pickle.loads(_b64(fields["pickle"]))
    elif "zlib" in fields:
        try:
            payload = zlib.decompress(_b64(fields["zlib"]))
        except zlib.error as exc:
            raise ValueError(f"Corrupt compressed cache entry: {exc}") from exc
        value = pickle.loads(payload) if fields.get("format") == "pickle" else json.loads(payload)
    else:
        raise ValueError("Not a cache entry: it has no 'value', 'pickle' or 'zlib' field.")
    return Entry(value, fields.get("expires"), fields.get("delta"))


def parse_fields(raw):
    """Return an entry's JSON object without decoding its value."""
    try:
        fields = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"Not a cache entry: not JSON text ({exc}).") from exc
    if not isinstance(fields, dict) or "expires" not in fields:
        raise ValueError("Not a cache entry: a JSON object with 'expires' was expected.")
    return fields


def retime(raw, expires):
    """Return the entry text ``raw`` with a new expiry, its value left byte-for-byte as is."""
    fields = parse_fields(raw)
    fields["expires"] = _round(expires)
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


class _Raw(str):
    """JSON text spliced into the entry as is (so the value is serialized once)."""


def _dump_fields(fields):
    parts = []
    for name, value in fields.items():
        text = value if isinstance(value, _Raw) else json.dumps(value)
        parts.append(f"{json.dumps(name)}:{text}")
    return "{" + ",".join(parts) + "}"


def _round(expires):
    """Return ``expires`` cut to milliseconds, rounding down so a ttl never exceeds its timeout."""
    return None if expires is None else math.floor(expires * 1000) / 1000


def _b64(text):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError) as exc:
        raise ValueError(f"Corrupt cache entry: bad base64 ({exc}).") from exc
