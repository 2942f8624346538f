"""Operator views of a namespace: what is stored, how it decodes, what can go.

``manage.py cfkv`` is a thin shell over these functions, and a staff page can
call :func:`summarize` to show the same figures with the same code.

Everything works from listings (name, KV expiry, metadata: 1 API call per
1,000 keys) and reads values only where it must. Kinds come from the metadata
convention ``{"kind": "cache"|"session"|"ratelimit", "expires": <epoch>}``,
else from key prefixes. Values are decoded by the cache, session and limiter
modules' own decoders when they are installed, else generically (JSON, text,
bytes).
"""

import base64
import importlib
import json
import logging
import math
import time

from django.core.serializers.json import DjangoJSONEncoder

from . import conf, limits
from .exceptions import KVAPIError, KVValueError

logger = logging.getLogger("django_cfkv")

KINDS = ("sessions", "cache", "ratelimit", "other")
SWEEP_KINDS = ("sessions", "cache", "ratelimit")
_METADATA_KINDS = {"session": "sessions", "cache": "cache", "ratelimit": "ratelimit"}
RATELIMIT_PREFIX = "rl:"
EXPIRY_BUCKETS = ("expired", "lt_1h", "lt_1d", "lt_7d", "later", "never")
_BUCKET_LIMITS = (("lt_1h", 3600), ("lt_1d", 86400), ("lt_7d", 7 * 86400))

#: Seconds an entry must be past its own expiry before sweep deletes it. KV
#: listings may be up to 60 s stale, so an entry refreshed just before its
#: expiry could still be listed with the old one; waiting this long means the
#: listing has caught up with any refresh made before the entry expired.
SWEEP_GRACE = 60

# Where each kind's decoder may live, imported lazily so this module works
# whichever are installed. The first one found is used.
DECODERS = {
    "sessions": [("django_cfkv.sessions", "decode_value")],
    "cache": [("django_cfkv.serializers", "decode_entry"), ("django_cfkv.cache", "decode_entry")],
    "ratelimit": [("django_cfkv.ratelimit", "describe_shard")],
}


def kind_of(name, metadata=None):
    """Return the kind of an entry: "sessions", "cache", "ratelimit" or "other"."""
    if isinstance(metadata, dict) and metadata.get("kind") in _METADATA_KINDS:
        return _METADATA_KINDS[metadata["kind"]]
    if name.startswith(conf.setting("SESSION_CFKV_KEY_PREFIX") or "session:"):
        return "sessions"
    if name.startswith(RATELIMIT_PREFIX):
        return "ratelimit"
    return "other"


def exact_expiry(info):
    """Return an entry's exact expiry (epoch seconds): metadata "expires", else KV's, else None."""
    expires = info.metadata.get("expires") if isinstance(info.metadata, dict) else None
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        return float(expires)
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
    now = time.time() if now is None else now
    expires = exact_expiry(info)
    return {
        "key": info.name,
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
    while limit is None or len(found) < limit:
        want = limits.LIST_MAX_LIMIT if limit is None else limit - len(found)
        page = kv.list_keys(prefix=prefix, cursor=cursor,
                            limit=max(limits.LIST_MIN_LIMIT, min(limits.LIST_MAX_LIMIT, want)))
        found += page.keys
        if progress:
            progress(len(found))
        cursor = page.cursor
        if not cursor:
            break
    more = bool(cursor) or (limit is not None and len(found) > limit)
    return found[:limit] if limit is not None else found, more


# Decoding


def _import_decoder(kind):
    """Return (dotted name, function) of the kind's decoder, or (None, None)."""
    for module, name in DECODERS.get(kind, ()):
        try:
            function = getattr(importlib.import_module(module), name, None)
        except Exception:  # not installed, or broken: try the next, then decode generically
            logger.debug("Cannot import %s.%s", module, name, exc_info=True)
            continue
        if callable(function):
            return f"{module}.{name}", function
    return None, None


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
    for fmt in (None, "json", "signed"):
        try:
            view, expires = decoder(raw) if fmt is None else decoder(raw, fmt)
        except ValueError as exc:
            error = exc
            continue
        return view, expires
    raise error


def _decode_cache(decoder, name, raw, metadata):
    """A cache entry as the value it caches."""
    entry = decoder(raw)
    return getattr(entry, "value", entry), getattr(entry, "expires", None)


def _decode_shard(decoder, name, raw, metadata):
    """A limiter shard as its policy, window and count."""
    try:
        shard = decoder(name, metadata, raw)
    except TypeError:  # a describe_shard(name, metadata) without the value argument
        shard = decoder(name, metadata)
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
    dotted, decoder = _import_decoder(kind)
    if decoder is not None:
        try:
            value, expires = _ADAPTERS[kind](decoder, name, raw, metadata)
        except Exception as exc:  # a value the decoder refuses is still shown, generically
            logger.debug("%s could not decode %r: %s", dotted, name, exc)
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


def _size_from(metadata):
    size = metadata.get("size") if isinstance(metadata, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


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
    now = time.time() if now is None else now
    entries, _ = list_entries(kv, prefix, progress=progress)
    sizes = {e.name: _size_from(e.metadata) for e in entries}
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
        "largest": [{"key": e.name, "kind": kind_of(e.name, e.metadata), "bytes": sizes[e.name]}
                    for e in sized[:largest]],
        "sizes_read": read_sizes,
    }


# Sweep


def _value_expiry(raw):
    """Return the expiry a value carries itself (a Worker-made session's ``expiresAt``), or None."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    expires = data.get("expiresAt") if isinstance(data, dict) else None
    if isinstance(expires, bool) or not isinstance(expires, (int, float, str)):
        return None
    if isinstance(expires, str):
        from django.utils.dateparse import parse_datetime

        try:
            parsed = parse_datetime(expires)
        except ValueError:
            parsed = None
        return parsed.timestamp() if parsed is not None and parsed.tzinfo is not None else None
    return expires / 1000 if expires > 1e11 else float(expires)  # JavaScript's Date.now() is in ms


class Sweep:
    """Find and delete entries past their own expiry that KV has not removed yet.

    KV removes an entry at its KV expiry, which our code sets to at least 60 s
    (KV's floor) and which can lag; the exact expiry is in the metadata. Only
    entries of our own kinds are touched. Orphans are limiter shards with no
    expiry anywhere but a window that, by their key name, has closed (shards
    written without our metadata); they are found when the limiter module's
    ``describe_shard`` is installed. Deletes go out in bulk batches of
    10,000 as the listing proceeds, so an interrupted sweep leaves nothing the
    next run cannot finish. API calls: ceil(n/1000) lists, ceil(d/10000) bulk
    deletes, and ceil(s/100) bulk reads for the s session keys that carry no
    expiry outside their value (sessions a Worker wrote without metadata).
    """

    def __init__(self, kv, kinds=SWEEP_KINDS, *, dry_run=False, now=None, grace=SWEEP_GRACE,
                 progress=None, batch_size=limits.BULK_DELETE_MAX_KEYS):
        self.kv, self.kinds, self.dry_run = kv, tuple(kinds), dry_run
        self.cutoff = (time.time() if now is None else now) - grace
        self.progress, self.batch_size = progress, batch_size
        self.scanned = self.deleted = self.values_read = 0
        self.found = {kind: {"expired": 0, "orphaned": 0} for kind in self.kinds}
        self._pending, self._unread = [], []
        self._describe_shard = _import_decoder("ratelimit")[1] if "ratelimit" in self.kinds else None

    def run(self):
        """Sweep the whole namespace; return the report (see :meth:`report`)."""
        for info in self.kv.iter_keys():
            self.scanned += 1
            kind = kind_of(info.name, info.metadata)
            if kind in self.kinds:
                self._consider(info, kind)
            if self.progress and self.scanned % limits.LIST_MAX_LIMIT == 0:
                self.progress(self.scanned, self.deleted)
        self._read_unread()
        self._flush()
        if self.progress:
            self.progress(self.scanned, self.deleted)
        return self.report()

    def _consider(self, info, kind):
        expires = exact_expiry(info)
        if expires is not None:
            if expires <= self.cutoff:
                self._doom(info.name, kind, "expired")
        elif kind == "ratelimit":
            if self._describe_shard is not None:
                shard = self._describe_shard(info.name, info.metadata)
                if isinstance(shard, dict) and (shard.get("window_end") or math.inf) <= self.cutoff:
                    self._doom(info.name, kind, "orphaned")
        elif kind == "sessions":
            self._unread.append(info.name)
            if len(self._unread) >= limits.BULK_GET_MAX_KEYS:
                self._read_unread()

    def _read_unread(self):
        names, self._unread = self._unread, []
        if not names:
            return
        self.values_read += len(names)
        try:
            values = self.kv.get_many(names)
        except (KVAPIError, KVValueError):  # a binary value in the chunk: not a Worker session
            return
        for name, raw in values.items():
            expires = _value_expiry(raw)
            if expires is not None and expires <= self.cutoff:
                self._doom(name, "sessions", "expired")

    def _doom(self, name, kind, reason):
        self.found[kind][reason] += 1
        self._pending.append(name)
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self):
        names, self._pending = self._pending, []
        if names and not self.dry_run:
            self.kv.delete_many(names)
            self.deleted += len(names)

    def report(self):
        """Return {"dry_run", "scanned", "found", "deleted", "values_read", "by_kind"}."""
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "found": sum(sum(counts.values()) for counts in self.found.values()),
            "deleted": self.deleted,
            "values_read": self.values_read,
            "by_kind": self.found,
        }


def sweep(kv, kinds=SWEEP_KINDS, **options):
    """Run a :class:`Sweep` over ``kv`` and return its report."""
    return Sweep(kv, kinds, **options).run()


# Ping

GATEWAY_SERVICE = "django-cfkv-gateway"
GATEWAY_HEALTH_PATH = "/__cfkv/health"
_API_HOST = "api.cloudflare.com"


def _timed(steps, name, fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    steps.append({"step": name, "ms": round((time.perf_counter() - started) * 1000, 2)})
    return result


def ping(kv, *, read_only=False):
    """Check that ``kv`` answers and return a report with each step's latency.

    Reads one list page (limit 10); unless ``read_only``, also writes, reads
    back and deletes a probe key (it carries a 60 s TTL, so it goes even if the
    delete is lost). API calls: 1 read-only, else 4; plus 1 to ask a gateway
    for its version when BASE_URL is not Cloudflare's API.
    ``probe`` is "ok", "stale" (the read did not see the write yet: Cloudflare
    does not promise read-after-write over REST) or None when ``read_only``.
    Raises KVError when a call fails.
    """
    import uuid

    steps, probe = [], None
    _timed(steps, "list", kv.list_keys, limit=limits.LIST_MIN_LIMIT)
    if not read_only:
        key, value = f"cfkv:ping:{uuid.uuid4().hex}", uuid.uuid4().hex.encode()
        _timed(steps, "put", kv.put, key, value, expiration_ttl=limits.MIN_TTL)
        read = _timed(steps, "get", kv.get, key)
        _timed(steps, "delete", kv.delete, key)
        # Not an error when it differs: Cloudflare does not promise read-after-write
        # over REST (two calls may reach different data centres).
        probe = "ok" if read == value else "stale"
    transport = getattr(kv, "transport", None)
    report = {
        "backend": type(kv).__name__,
        "namespace_id": getattr(kv, "namespace_id", getattr(kv, "namespace", None)),
        "base_url": getattr(kv, "base_url", None),
        "path": getattr(kv, "path", None),
        "read_only": read_only,
        "probe": probe,
        "steps": steps,
        "budget": None,
        "gateway": gateway_health(kv),
    }
    if transport is not None and transport.budget is not None:
        remaining, reset, seen_at = transport.budget
        report["budget"] = {"remaining": remaining, "reset_seconds": reset, "seen_at": seen_at}
    return report


def gateway_health(kv):
    """Return the django-cfkv gateway's health result {"service", "version", "namespace_id"}
    when ``kv`` talks to one, else None. One API call, skipped for Cloudflare's own API."""
    from urllib.parse import urlsplit

    base_url, transport = getattr(kv, "base_url", None), getattr(kv, "transport", None)
    if not base_url or transport is None or urlsplit(base_url).hostname == _API_HOST:
        return None
    root = base_url[: -len("/client/v4")] if base_url.endswith("/client/v4") else base_url
    try:
        response = transport.request("GET", root + GATEWAY_HEALTH_PATH, endpoint="health")
        data = response.json() if response.status_code == 200 else None
    except Exception:  # not a gateway (or not answering this path): that is all we need to know
        return None
    result = data.get("result") if isinstance(data, dict) and data.get("success") is True else None
    if isinstance(result, dict) and result.get("service") == GATEWAY_SERVICE:
        return {"service": GATEWAY_SERVICE, "version": result.get("version"),
                "namespace_id": result.get("namespace_id")}
    return None
