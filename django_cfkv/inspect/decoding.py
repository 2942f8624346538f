"""A stored value as its kind's own decoder reads it (a session as its dict, a cache entry as its value,
a limiter shard as its counts), else generically: JSON, text or bytes."""

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from .. import conf
from ..limits import loads_json
from .entries import display_key, kind_of

logger = logging.getLogger("django_cfkv")

# Each kind's decoder, imported on first use (listing needs none of them).
DECODERS = {
    "sessions": "django_cfkv.sessions.decode_value",
    "cache": "django_cfkv.serializers.decode_entry",
    "ratelimit": "django_cfkv.ratelimit.describe_shard",
}


def decoder_for(kind: str) -> tuple[str | None, Callable[..., Any] | None]:
    """Return (dotted name, function) of the kind's decoder, or (None, None) for "other"."""
    dotted = DECODERS.get(kind)
    return (dotted, import_string(dotted)) if dotted else (None, None)


def decode_generic(raw: bytes) -> tuple[str, Any]:
    """Return (format, value) for bytes: ("json", obj), ("text", str) or ("bytes", base64 str)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes", base64.b64encode(raw).decode("ascii")
    try:
        return "json", loads_json(text)
    except ValueError:  # not JSON, or nested past what json reads
        return "text", text


# Each adapter returns (value, the expiry the value carries itself or None).

def _decode_session(decoder: Callable[..., Any], name: str, raw: bytes, metadata: Any) -> tuple[Any, Any]:
    """A session as its dict: the site's format first, then the other (a Worker may write JSON)."""
    error = None
    for fmt in dict.fromkeys((conf.setting("SESSION_CFKV_FORMAT"), "json", "signed")):
        try:
            return decoder(raw, fmt)
        except ValueError as exc:
            error = exc
    assert error is not None
    raise error


def _decode_cache(decoder: Callable[..., Any], name: str, raw: bytes, metadata: Any) -> tuple[Any, Any]:
    """A cache entry as the value it caches. A pickled entry is unpickled only if it is signed for
    this key with SECRET_KEY (or a fallback); else it is shown as its text and logged."""
    from ..serializers import SignatureError

    try:
        entry = decoder(raw, name)
    except SignatureError as exc:
        logging.getLogger("django.security.SuspiciousCacheEntry").warning(
            "Refused to decode the cache entry at KV key sha256:%s: %s.",
            hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16], exc)
        raise
    return getattr(entry, "value", entry), getattr(entry, "expires", None)


def _decode_shard(decoder: Callable[..., Any], name: str, raw: bytes, metadata: Any) -> tuple[Any, Any]:
    """A limiter shard as its policy, window and count."""
    shard = decoder(name, metadata, raw)
    if not isinstance(shard, dict):
        raise ValueError("not a limiter shard")
    return shard, shard.get("window_end")


_ADAPTERS = {"sessions": _decode_session, "cache": _decode_cache, "ratelimit": _decode_shard}


def decode(name: str, raw: bytes, metadata: Any = None) -> dict[str, Any]:
    """Return ``{"kind", "format", "decoder", "value", "value_expires"}`` for a stored value.

    The kind's own decoder is used when it is installed and accepts the value
    (a session as its dict, a cache entry as its value, a limiter shard as its
    counts; ``value_expires`` is the expiry the value itself carries, or None).
    Otherwise the value is decoded generically and ``decoder`` is "generic".
    """
    kind = kind_of(name, metadata)
    dotted, decoder = decoder_for(kind)
    if decoder is not None:
        try:
            value, expires = _ADAPTERS[kind](decoder, name, raw, metadata)
        except Exception as exc:  # a value the decoder refuses is still shown, generically
            logger.debug("%s could not decode %r: %s", dotted, display_key(name, metadata), exc)
        else:
            return {"kind": kind, "format": kind, "decoder": dotted, "value": jsonable(value),
                    "value_expires": expires}
    fmt, value = decode_generic(raw)
    return {"kind": kind, "format": fmt, "decoder": "generic", "value": value, "value_expires": None}


class _Encoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, (bytes, bytearray, memoryview)):
            return decode_generic(bytes(o))[1]
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if hasattr(o, "_asdict"):
            return o._asdict()
        try:
            return super().default(o)
        except TypeError:
            return repr(o)


def jsonable(value: Any) -> Any:
    """Return ``value`` made of JSON types only (anything else becomes its repr)."""
    return json.loads(json.dumps(value, cls=_Encoder))
