"""Sweeping: deleting entries past their own expiry that KV has not removed yet."""

import math
from collections.abc import Callable, Iterable
from typing import Any

from .. import clock, limits
from ..exceptions import KVAPIError, KVValueError
from ..inspect import SWEEP_KINDS, decoder_for, exact_expiry, kind_of
from ..types import KV, KeyInfo

#: Seconds an entry must be past its own expiry before sweep deletes it. KV
#: listings may be up to 60 s stale, so an entry refreshed just before its
#: expiry could still be listed with the old one; waiting this long means the
#: listing has caught up with any refresh made before the entry expired.
SWEEP_GRACE = 60


def _value_expiry(raw: bytes) -> float | None:
    """Return the expiry a value carries itself (a Worker-made session's ``expiresAt``), or None."""
    try:
        data = limits.loads_json(raw)
    except ValueError:
        return None
    expires = data.get("expiresAt") if isinstance(data, dict) else None
    if isinstance(expires, str):
        from django.utils.dateparse import parse_datetime

        try:
            parsed = parse_datetime(expires)
        except ValueError:
            parsed = None
        return parsed.timestamp() if parsed is not None and parsed.tzinfo is not None else None
    if not limits.is_finite_number(expires):
        return None
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

    def __init__(self, kv: KV, kinds: Iterable[str] = SWEEP_KINDS, *, dry_run: bool = False,
                 now: float | None = None, grace: float = SWEEP_GRACE,
                 progress: Callable[[int, int], None] | None = None,
                 batch_size: int = limits.BULK_DELETE_MAX_KEYS) -> None:
        self.kv, self.kinds, self.dry_run = kv, tuple(kinds), dry_run
        self.cutoff = (clock.now() if now is None else now) - grace
        self.progress, self.batch_size = progress, batch_size
        self.scanned = self.deleted = self.values_read = 0
        self.found = {kind: {"expired": 0, "orphaned": 0} for kind in self.kinds}
        self._pending: list[str] = []
        self._unread: list[str] = []
        self._describe_shard = decoder_for("ratelimit")[1] if "ratelimit" in self.kinds else None

    def run(self) -> dict[str, Any]:
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

    def _consider(self, info: KeyInfo, kind: str) -> None:
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

    def _read_unread(self) -> None:
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

    def _doom(self, name: str, kind: str, reason: str) -> None:
        self.found[kind][reason] += 1
        self._pending.append(name)
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        names, self._pending = self._pending, []
        if names and not self.dry_run:
            self.kv.delete_many(names)
            self.deleted += len(names)

    def report(self) -> dict[str, Any]:
        """Return {"dry_run", "scanned", "found", "deleted", "values_read", "by_kind"}."""
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "found": sum(sum(counts.values()) for counts in self.found.values()),
            "deleted": self.deleted,
            "values_read": self.values_read,
            "by_kind": self.found,
        }


def sweep(kv: KV, kinds: Iterable[str] = SWEEP_KINDS, **options: Any) -> dict[str, Any]:
    """Run a :class:`Sweep` over ``kv`` and return its report."""
    return Sweep(kv, kinds, **options).run()
