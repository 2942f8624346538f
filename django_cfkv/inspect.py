"""Operator views of a namespace: what is stored, how it decodes, what can go.

``manage.py cfkv ls/get/stats`` are thin shells over these functions, and a
staff page can call :func:`summarize` to show the same figures with the same
code. Sweeping and pinging are in :mod:`django_cfkv.maintenance`.

Everything works from listings (name, KV expiry, metadata: 1 API call per
1,000 keys) and reads values only where it must. Kinds come from the metadata
convention ``{"kind": "cache"|"session"|"ratelimit", "expires": <epoch>}``,
else from key prefixes. Values are decoded by the cache, session and limiter
modules' own decoders when they are installed, else generically (JSON, text,
bytes).

Nothing here prints a usable session id: in the plain key layout a session's
key name is its id, so such names are shown cut short (:func:`display_key`).
"""

import base64
import hashlib
import json
import logging

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from . import clock, conf, limits
from .exceptions import KVAPIError, KVValueError
from .metadata import CACHE, RATELIMIT, SESSION
from .metadata import read as read_metadata
from .types import iter_pages

logger = logging.getLogger("django_cfkv")

KINDS = ("sessions", "cache", "ratelimit", "other")
SWEEP_KINDS = ("sessions", "cache", "ratelimit")
_METADATA_KINDS = {SESSION: "sessions", CACHE: "cache", RATELIMIT: "ratelimit"}
RATELIMIT_PREFIX = "rl:"
EXPIRY_BUCKETS = ("expired", "lt_1h", "lt_1d", "lt_7d", "later", "never")
_BUCKET_LIMITS = (("lt_1h", 3600), ("lt_1d", 86400), ("lt_7d", 7 * 86400))

# Each kind's decoder, imported on first use (listing needs none of them).
DECODERS = {
    "sessions": "django_cfkv.sessions.decode_value",
    "cache": "django_cfkv.serializers.decode_entry",
    "ratelimit": "django_cfkv.ratelimit.describe_shard",
}


def kind_of(name, metadata=None):
    """Return the kind of an entry: "sessions", "cache", "ratelimit" or "other"."""
    kind = read_metadata(metadata).kind
    if kind in _METADATA_KINDS:
        return _METADATA_KINDS[kind]
    if name.startswith(conf.setting("SESSION_CFKV_KEY_PREFIX") or "session:"):
        return "sessions"
    if name.startswith(RATELIMIT_PREFIX):
        return "ratelimit"
    return "other"


def display_key(name, metadata=None):
    """Return ``name`` fit to show: a session key that holds a usable id (the plain layout) is cut short.

    ``session:k3x9w2m8...`` becomes ``session:k3x9…``: enough to tell keys
    apart, too little to use as a cookie or a bearer token. Hashed session
    keys, which no one can use, are shown whole.
    """
    if kind_of(name, metadata) != "sessions":
        return name
    from .sessions import is_valid_key

    prefix = conf.setting("SESSION_CFKV_KEY_PREFIX")
    tail = name[len(prefix):] if prefix and name.startswith(prefix) else name.rpartition(":")[2]
    if not is_valid_key(tail, "json"):  # neither a Django session key nor a Worker's UUID
        return name
    return name[:len(name) - len(tail)] + tail[:4] + "…"


def exact_expiry(info):
    """Return an entry's exact expiry (epoch seconds): metadata "expires", else KV's, else None."""
    expires = read_metadata(info.metadata).expires
    if expires is not None:
        return expires
    return None if info.expiration is None else float(info.expiration)


def expiry_bucket(expires, now):
    """Return the EXPIRY_BUCKETS name for an exact expiry."""
    if expires is None:
        return "never"
    left = expires - now
    if left <= 0:
        return "expired"
    for bucket, limit in _BUCKET_LIMITS:
        if left < limit:
            return bucket
    return "later"


def describe(info, now=None):
    """Return one listed key as a JSON-ready dict (the ``ls --json`` item)."""
    now = clock.now() if now is None else now
    expires = exact_expiry(info)
    return {
        "key": display_key(info.name, info.metadata),
        "kind": kind_of(info.name, info.metadata),
        "expires": expires,
        "expired": expires is not None and expires <= now,
        "kv_expiration": info.expiration,
        "metadata": info.metadata,
    }


def list_entries(kv, prefix=None, limit=None, progress=None):
    """Return up to ``limit`` KeyInfo (all when None) and whether more were left.

    Costs ceil(returned/1000) list calls.
    """
    found, cursor = [], None
    size = limits.LIST_MAX_LIMIT if limit is None else max(limits.LIST_MIN_LIMIT, min(limits.LIST_MAX_LIMIT, limit))
    for page in iter_pages(kv, prefix, size):
        found += page.keys
        if progress:
            progress(len(found))
        cursor = page.cursor
        if limit is not None and len(found) >= limit:
            break
    more = bool(cursor) or (limit is not None and len(found) > limit)
    return found[:limit] if limit is not None else found, more


# Decoding


def decoder_for(kind):
    """Return (dotted name, function) of the kind's decoder, or (None, None) for "other"."""
    dotted = DECODERS.get(kind)
    return (dotted, import_string(dotted)) if dotted else (None, None)


def decode_generic(raw):
    """Return (format, value) for bytes: ("json", obj), ("text", str) or ("bytes", base64 str)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes", base64.b64encode(raw).decode("ascii")
    try:
        return "json", json.loads(text)
    except ValueError:
        return "text", text


def _decode_session(decoder, name, raw, metadata):
    """A session as its dict: the site's format first, then the other (a Worker may write JSON)."""
    error = None
    for fmt in dict.fromkeys((conf.setting("SESSION_CFKV_FORMAT"), "json", "signed")):
        try:
            return decoder(raw, fmt)
        except ValueError as exc:
            error = exc
    raise error


def _decode_cache(decoder, name, raw, metadata):
    """A cache entry as the value it caches. A pickled entry is unpickled only if it is signed for
    this key with SECRET_KEY (or a fallback); else it is shown as its text and logged."""
    from .serializers import SignatureError

    try:
        entry = decoder(raw, name)
    except SignatureError as exc:
        logging.getLogger("django.security.SuspiciousCacheEntry").warning(
            "Refused to decode the cache entry at KV key sha256:%s: %s.",
            hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16], exc)
        raise
    return getattr(entry, "value", entry), getattr(entry, "expires", None)


def _decode_shard(decoder, name, raw, metadata):
    """A limiter shard as its policy, window and count."""
    shard = decoder(name, metadata, raw)
    if not isinstance(shard, dict):
        raise ValueError("not a limiter shard")
    return shard, shard.get("window_end")


_ADAPTERS = {"sessions": _decode_session, "cache": _decode_cache, "ratelimit": _decode_shard}


def decode(name, raw, metadata=None):
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
    def default(self, o):
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


def jsonable(value):
    """Return ``value`` made of JSON types only (anything else becomes its repr)."""
    return json.loads(json.dumps(value, cls=_Encoder))


# Summary


_SINGLE_READS_UPTO = 4  # a refused bulk read of this many keys or fewer is redone key by key


def read_values(kv, names):
    """Return {name: bytes} for those of ``names`` that exist.

    Bulk reads of 100 keys. KV's bulk read refuses a chunk holding a binary
    value, so a refused chunk is halved and retried until the binary values
    are read one by one: one binary value among 100 costs about 10 more bulk
    reads and at most 4 single reads, rather than 100 single reads.
    """
    found = {}
    pending = [names[i:i + limits.BULK_GET_MAX_KEYS] for i in range(0, len(names), limits.BULK_GET_MAX_KEYS)]
    while pending:
        chunk = pending.pop()
        try:
            found.update(kv.get_many(chunk))
        except (KVAPIError, KVValueError):
            if len(chunk) > _SINGLE_READS_UPTO:
                half = (len(chunk) + 1) // 2
                pending += [chunk[half:], chunk[:half]]
                continue
            found.update((n, v) for n, v in ((n, kv.get(n)) for n in chunk) if v is not None)
    return found


def summarize(kv, prefix=None, *, read_sizes=False, largest=10, now=None, progress=None):
    """Return counts and sizes by kind, an expiry histogram and the largest keys.

    Costs ceil(n/1000) list calls. Sizes come from a metadata ``"size"`` where
    writers record one; with ``read_sizes`` the other values are read too
    (ceil(m/100) bulk reads, and a few more where binary values sit; see
    :func:`read_values`).
    ``bytes_known`` says for how many keys of each kind the size is known.
    """
    now = clock.now() if now is None else now
    entries, _ = list_entries(kv, prefix, progress=progress)
    sizes = {e.name: read_metadata(e.metadata).size for e in entries}
    if read_sizes:
        unknown = [name for name, size in sizes.items() if size is None]
        sizes.update((name, len(value)) for name, value in read_values(kv, unknown).items())
    kinds = {kind: {"count": 0, "bytes": 0, "bytes_known": 0} for kind in KINDS}
    expiry = dict.fromkeys(EXPIRY_BUCKETS, 0)
    for entry in entries:
        kind = kinds[kind_of(entry.name, entry.metadata)]
        kind["count"] += 1
        if sizes.get(entry.name) is not None:
            kind["bytes"] += sizes[entry.name]
            kind["bytes_known"] += 1
        expiry[expiry_bucket(exact_expiry(entry), now)] += 1
    sized = sorted((e for e in entries if sizes.get(e.name) is not None),
                   key=lambda e: (-sizes[e.name], e.name))
    return {
        "prefix": prefix,
        "generated_at": now,
        "keys": len(entries),
        "kinds": kinds,
        "expiry": expiry,
        "largest": [{"key": display_key(e.name, e.metadata), "kind": kind_of(e.name, e.metadata),
                     "bytes": sizes[e.name]}
                    for e in sized[:largest]],
        "sizes_read": read_sizes,
    }
