"""Bulk calls: items and keys cut into calls within KV's limits, and the error that names every key not done.

No I/O: a client sends the calls one after another and tells a :class:`BulkRun`
how each went; the run says which keys were not written (or deleted).
"""

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from .. import limits
from ..exceptions import KVBulkError, KVError


class _Call(Protocol):
    @property
    def keys(self) -> tuple[str, ...]: ...


def item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Return one bulk-write item as KV takes it, after validating it (binary values as base64)."""
    key = limits.validate_key(item["key"])
    value = limits.validate_value(item["value"])
    meta = item.get("metadata")
    limits.encode_metadata(meta)
    limits.validate_expiry(item.get("expiration"), item.get("expiration_ttl"))
    out: dict[str, Any]
    try:
        out = {"key": key, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        out = {"key": key, "value": base64.b64encode(value).decode("ascii"), "base64": True}
    if item.get("expiration_ttl") is not None:
        out["expiration_ttl"] = int(item["expiration_ttl"])
    elif item.get("expiration") is not None:
        out["expiration"] = int(item["expiration"])
    if meta is not None:
        out["metadata"] = meta
    return out


def batches(items: list[dict[str, Any]]) -> Iterator[tuple[list[str], str]]:
    """Split bulk-write items into requests of <= 10,000 pairs and <= 100 MB: each one's keys and JSON body.

    Each item is encoded once, to measure it and to send it (the body is the items' compact JSON array).
    """
    keys: list[str] = []
    parts: list[str] = []
    size = 2
    for entry in items:
        text = json.dumps(entry, separators=(",", ":"))
        if parts and (len(parts) >= limits.BULK_WRITE_MAX_ITEMS or size + len(text) + 1 > limits.BULK_WRITE_MAX_BYTES):
            yield keys, "[" + ",".join(parts) + "]"
            keys, parts, size = [], [], 2
        keys.append(entry["key"])
        parts.append(text)
        size += len(text) + 1
    if parts:
        yield keys, "[" + ",".join(parts) + "]"


def chunks(seq: list[str], size: int) -> Iterator[list[str]]:
    """Yield ``seq`` in slices of at most ``size``."""
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


class BulkRun:
    """A run of bulk calls sent one after another, and the keys they left undone.

    A failed call (an error status, or a connection error after retries) ends
    the run: its keys (or those its answer names) and every later call's keys
    are reported, never dropped, so a caller retrying ``exc.keys`` loses nothing.
    """

    def __init__(self, action: str, calls: Sequence[_Call]) -> None:
        self.action = action  # "write" or "delete", for messages
        self.calls = calls
        self.failed: list[str] = []

    def answered(self, unsuccessful: list[str]) -> None:
        """Note the keys a successful call's answer names as not done."""
        self.failed += unsuccessful

    def stopped(self, index: int, exc: KVError) -> KVBulkError:
        """Return the error for a run that call ``index`` ended by failing with ``exc``."""
        named = exc.result.get("unsuccessful_keys") if isinstance(exc.result, dict) else None
        if not (isinstance(named, list) and named and all(isinstance(k, str) for k in named)):
            named = list(self.calls[index].keys)
        failed = self.failed + named + [k for later in self.calls[index + 1:] for k in later.keys]
        return KVBulkError(f"Bulk {self.action} failed for {len(failed)} keys: {exc.message}", keys=failed,
                           status=exc.status, errors=exc.errors)

    def finish(self) -> None:
        """Raise KVBulkError (partial) if any call's answer named keys not done."""
        if self.failed:
            # The keys are on .keys, not in the text: they may be session ids, and error text gets logged.
            raise KVBulkError(f"Bulk {self.action} left {len(self.failed)} keys undone; retry them (see .keys).",
                              keys=self.failed, partial=True)
