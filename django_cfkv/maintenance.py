"""Operations on a namespace for operators: sweeping expired entries and pinging.

``manage.py cfkv sweep`` and ``ping`` are thin shells over these; a periodic
task can call :func:`sweep` directly. Kinds and expiries are judged as in
:mod:`django_cfkv.inspect`.
"""

import json
import math
import time
from urllib.parse import urlsplit

from . import clock, limits
from .client import DEFAULT_BASE_URL
from .exceptions import CFKVConfigurationError, KVAPIError, KVValueError
from .inspect import SWEEP_KINDS, decoder_for, exact_expiry, kind_of, read_values

#: Seconds an entry must be past its own expiry before sweep deletes it. KV
#: listings may be up to 60 s stale, so an entry refreshed just before its
#: expiry could still be listed with the old one; waiting this long means the
#: listing has caught up with any refresh made before the entry expired.
SWEEP_GRACE = 60

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
        self.cutoff = (clock.now() if now is None else now) - grace
        self.progress, self.batch_size = progress, batch_size
        self.scanned = self.deleted = self.values_read = 0
        self.found = {kind: {"expired": 0, "orphaned": 0} for kind in self.kinds}
        self._pending, self._unread = [], []
        self._describe_shard = decoder_for("ratelimit")[1] if "ratelimit" in self.kinds else None

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


# Sessions stored under their id (the plain key layout)


def move_plain_sessions(store, *, drop=False, dry_run=False, now=None):
    """Move sessions whose key name is their id to the key ``store`` uses now (hashed); or delete them.

    ``store`` is the engine's SessionStore class (its alias, prefix and
    layout). A key counts as plain when the text after the prefix is a
    usable id (a Django session key or a Worker's UUID). Each is written at
    the store's key for that id with its value, metadata and KV expiry, then
    deleted; one past its exact expiry, or whose new key is already listed
    (moved by an earlier run), is only deleted. ``drop`` deletes them all
    (everyone they belong to signs in again); ``dry_run`` changes nothing.
    Run it again after an interruption: it finishes the job.
    API calls: ceil(listed/1000) lists, ceil(moved/100) bulk reads, then one
    bulk write and one bulk delete per 10,000.
    Return {"dry_run", "drop", "found", "moved", "deleted"}.
    """
    from .sessions import is_valid_key, key_layout

    if key_layout() == "plain":
        raise CFKVConfigurationError("SESSION_CFKV_KEY_LAYOUT is 'plain', so sessions already live under "
                                     "their ids: there is nothing to move. Set it to 'hashed' first.")
    kv, prefix = store.get_kv(), store.key_prefix()
    now = clock.now() if now is None else now
    listed, plain = set(), []
    for info in kv.iter_keys(prefix=prefix):
        listed.add(info.name)
        if is_valid_key(info.name[len(prefix):], "json"):
            plain.append(info)
    target = {info.name: store.kv_key(info.name[len(prefix):]) for info in plain}
    to_move = [] if drop else [info for info in plain if target[info.name] not in listed
                               and (exact_expiry(info) is None or exact_expiry(info) > now)]
    report = {"dry_run": dry_run, "drop": drop, "found": len(plain), "moved": 0, "deleted": 0}
    if dry_run or not plain:
        report["moved"] = len(to_move)
        return report
    values = read_values(kv, [info.name for info in to_move])
    items = [{"key": target[info.name], "value": values[info.name], "metadata": info.metadata,
              # KV refuses an expiry under 60 s away; the exact one travels in the value.
              "expiration": None if info.expiration is None else max(info.expiration, math.ceil(now) + 61)}
             for info in to_move if info.name in values]
    if items:
        kv.put_many(items)
    kv.delete_many([info.name for info in plain])
    report.update(moved=len(items), deleted=len(plain))
    return report


# Ping

GATEWAY_SERVICE = "django-cfkv-gateway"
GATEWAY_HEALTH_PATH = "/__cfkv/health"
_API_HOST = urlsplit(DEFAULT_BASE_URL).hostname


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
