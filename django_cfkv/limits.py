"""Cloudflare Workers KV's limits, and the validators that enforce them.

The client, the embedded store and the emulator share these, so all three
refuse the same input with the same message, before any I/O.
Source: shared reference on the KV REST API, section 5 (Cloudflare's published limits).
"""

import json
import math
from collections.abc import Iterable
from typing import Any, TypeGuard

from . import clock
from .exceptions import KVValueError

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MIN_TTL = 60
BULK_WRITE_MAX_ITEMS = 10_000
BULK_WRITE_MAX_BYTES = 100 * 1000 * 1000
BULK_DELETE_MAX_KEYS = 10_000
BULK_GET_MAX_KEYS = 100
LIST_MIN_LIMIT = 10
LIST_MAX_LIMIT = 1000
MAX_NAMESPACES = 1000  # per account
MAX_NAMESPACE_TITLE = 512  # characters
# The largest answer KV can give: a value, or a JSON envelope around at most
# one value's worth of data (a list page of 1,000 keys with metadata is ~1.6 MB).
MAX_RESPONSE_BYTES = MAX_VALUE_BYTES + 1024 * 1024
# Past the REST quota Cloudflare refuses every call for five minutes, its
# longest documented refusal (shared reference, section 6).
QUOTA_BLOCK_SECONDS = 300

# Cloudflare's API error codes for the refusals below, carried by each KVValueError
# as ``code`` (so the emulator answers as Cloudflare does without reading the text).
PAYLOAD_TOO_LARGE = 10024
INVALID_LIST_LIMIT = 10028
INVALID_REQUEST = 10029
KEY_TOO_LONG = 10030
INVALID_EXPIRATION = 10033
INVALID_EXPIRATION_TTL = 10034
INVALID_CURSOR = 10041
INVALID_KEY = 10042
INVALID_METADATA = 10047


def validate_key(key: object) -> str:
    """Return ``key`` as UTF-8 bytes' text, or raise KVValueError saying what to fix."""
    if not isinstance(key, str):
        raise KVValueError(f"KV keys must be str, not {type(key).__name__}.")
    if key in ("", ".", ".."):
        raise KVValueError(
            f"Illegal KV key {key!r}: a key cannot be empty, '.' or '..'.", code=INVALID_KEY
        )
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise KVValueError(
            "KV keys must be valid UTF-8 text (the key contains a lone surrogate).", code=INVALID_KEY
        ) from exc
    if size > MAX_KEY_BYTES:
        raise KVValueError(
            f"KV key is {size} bytes in UTF-8; the limit is {MAX_KEY_BYTES} bytes. "
            "Use a shorter key (or hash it).", code=KEY_TOO_LONG, too_large=True
        )
    return key


def validate_keys(keys: Iterable[str]) -> list[str]:
    """Return ``keys`` without repeats, in order, each validated (a bulk call's keys)."""
    unique = list(dict.fromkeys(keys))
    for key in unique:
        validate_key(key)
    return unique


def validate_value(value: object) -> bytes:
    """Return ``value`` as bytes, or raise KVValueError if it is too large or not bytes/str."""
    if isinstance(value, str):
        try:
            value = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise KVValueError(
                "KV values given as text must be valid UTF-8 (the value contains a lone surrogate); give bytes."
            ) from exc
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise KVValueError(
            f"KV values must be bytes or str, not {type(value).__name__}; serialize it first."
        )
    if len(value) > MAX_VALUE_BYTES:
        raise KVValueError(
            f"KV value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES} bytes (25 MiB).",
            code=PAYLOAD_TOO_LARGE, too_large=True,
        )
    return value


def encode_metadata(metadata: Any) -> str | None:
    """Return ``metadata`` as compact JSON text (or None), checked against the 1024-byte limit."""
    if metadata is None:
        return None
    try:
        text = json.dumps(metadata, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise KVValueError(f"KV metadata must be JSON-serializable: {exc}", code=INVALID_METADATA) from exc
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise KVValueError(
            f"KV metadata is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES} bytes.",
            code=INVALID_METADATA, too_large=True,
        )
    return text


def validate_expiry(expiration: float | None = None, expiration_ttl: float | None = None, *,
                    now: float | None = None) -> int | None:
    """Check KV's expiry rules; return the absolute expiry (epoch seconds) or None.

    As on Cloudflare, ``expiration_ttl`` wins when both are given.
    """
    if expiration_ttl is None and expiration is None:  # most writes: no clock read
        return None
    now = clock.now() if now is None else now
    if expiration_ttl is not None:
        if not is_finite_number(expiration_ttl):
            raise KVValueError("expiration_ttl must be a finite number of seconds.", code=INVALID_EXPIRATION_TTL)
        if expiration_ttl < MIN_TTL:
            raise KVValueError(
                f"Invalid expiration_ttl of {expiration_ttl}: KV needs at least {MIN_TTL} seconds.",
                code=INVALID_EXPIRATION_TTL,
            )
        return int(now + expiration_ttl)
    if expiration is not None:
        if not is_finite_number(expiration):
            raise KVValueError("expiration must be a UNIX time in seconds (a finite number).",
                               code=INVALID_EXPIRATION)
        if expiration < now + MIN_TTL:
            raise KVValueError(
                f"Invalid expiration of {int(expiration)}: expiration times must be at "
                f"least {MIN_TTL} seconds in the future.", code=INVALID_EXPIRATION
            )
        return int(expiration)
    return None


def is_seconds(value: object, *, zero_ok: bool = False) -> TypeGuard[int | float]:
    """Return True if ``value`` is a number of seconds a setting may hold: finite, > 0 (>= 0 with ``zero_ok``),
    not a bool (True is 1 to Python, never a duration a user meant)."""
    return is_finite_number(value) and (value >= 0 if zero_ok else value > 0)


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """Return True if ``value`` is a finite number a float holds, not a bool: what JSON anyone wrote (10**400
    included, for which isfinite() raises) may be read as a time or a count."""
    # NaN and infinity pass every comparison check but cannot become an int.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large to be a time
        return False


def dumps_json(value: Any, **options: Any) -> str:
    """Return ``value`` as compact JSON text that encodes as UTF-8: other scripts as they are, and a lone
    surrogate (text no UTF-8 can hold, as a ``json.loads`` of ``"\\ud800"`` gives) as its ``\\u`` escape, which
    JSON readers decode back to the same text."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, **options)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, separators=(",", ":"), **options)
    return text


_DECODER = json.JSONDecoder()
_SPACE = frozenset(" \t\n\r")  # JSON's whitespace, which json.loads() skips around a value
_NOT_FIRST = _SPACE | {"", "\ufeff"}  # json.loads() skips the first, names the BOM, and refuses empty text


def loads_json(text: str | bytes) -> Any:
    """Return the JSON value of ``text`` anyone may have written (a namespace writer, an upstream, a client), or
    raise ValueError: json's errors and UnicodeDecodeError are ValueErrors, and so here is nesting deeper than
    Python's recursion limit (``"[" * 100000``), for which json raises RecursionError."""
    try:
        if type(text) is str and text[:1] not in _NOT_FIRST and text[-1:] not in _SPACE:
            # What json.loads() ends in, without its layers: text with no space around it (every answer and value
            # this package reads) is read at once, with json.loads()'s errors. Anything else is json.loads()'s.
            value, end = _DECODER.raw_decode(text)
            if end != len(text):  # at json.loads()'s position: past the space after the value
                raise json.JSONDecodeError("Extra data", text, len(text) - len(text[end:].lstrip(" \t\n\r")))
            return value
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def parse_digits(text: str, max_digits: int) -> int | None:
    """Return the whole number ``text`` spells in at most ``max_digits`` ASCII digits, else None: for text
    anyone may write (a header, a query string, a key's name). isdigit() alone takes "²", which int()
    refuses, and int() refuses more than 4,300 digits."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= max_digits else None


def validate_list_limit(limit: object) -> int:
    """Return ``limit`` if KV accepts it as a list page size (10..1000)."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise KVValueError("list limit must be an integer.", code=INVALID_LIST_LIMIT)
    if not LIST_MIN_LIMIT <= limit <= LIST_MAX_LIMIT:
        raise KVValueError(
            f"Invalid list limit {limit}: KV pages hold {LIST_MIN_LIMIT} to {LIST_MAX_LIMIT} keys.",
            code=INVALID_LIST_LIMIT,
        )
    return limit
