"""LocalKV: the KV interface over one SQLite file (see :mod:`django_cfkv.local.database`).

It keeps Workers KV's semantics (expiry, metadata, listing in UTF-8 byte order
with opaque cursors, the same limits) so that code tested on it behaves the same
on Cloudflare. Unlike Cloudflare, it is strongly consistent: a write is seen at
once everywhere.

From async code (``aget``, ``aput``, ``aiter_keys``...) each call runs in one of the
process's worker threads (:mod:`django_cfkv.threads`), never on the event loop. That is
the right shape for SQLite: its calls are blocking C calls with no async API; its
connections are per thread, and a worker thread keeps its own open across event loops;
and in WAL mode the threads read at once while their writes queue on the file's lock,
as writes from several processes do.
"""

import base64
import binascii
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .. import clock, limits
from ..exceptions import CFKVConfigurationError, KVAPIError, KVValueError
from ..threads import AsyncTwins
from ..types import KeyInfo, KeyPage, ValueWithMetadata
from .database import DEFAULT_BUSY_TIMEOUT, Database, store_errors, transaction


def _prefix_range(prefix: str) -> tuple[bytes, bytes | None]:
    """Return (low, high) byte bounds of keys starting with ``prefix``; high may be None."""
    low = prefix.encode("utf-8")
    high = bytearray(low)
    while high and high[-1] == 0xFF:
        high.pop()
    if not high:
        return low, None
    high[-1] += 1
    return low, bytes(high)


def _encode_cursor(key_bytes: bytes) -> str:
    return base64.urlsafe_b64encode(key_bytes).decode("ascii")


def _decode_cursor(cursor: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        # Not quoted: a cursor is the last key of a page, which may be a session id.
        raise KVValueError("Invalid list cursor: pass back the cursor a previous page gave.",
                           code=limits.INVALID_CURSOR) from None


class LocalKV(AsyncTwins):
    """Workers KV's interface over a SQLite file; ``namespace`` keeps several apart in one file.

    ``busy_timeout`` is how long a write waits for another connection's write
    lock before it fails with KVTimeout (in settings, the alias' BUSY_TIMEOUT).
    Every method has an async twin named with an ``a`` in front, run in a worker thread.
    """

    def __init__(self, path: str | os.PathLike[str], namespace: str = "", *,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file::memory:"):
            # SQLite gives each connection (so each thread) its own in-memory database.
            raise KVValueError("LocalKV needs a file path: an in-memory SQLite database is not shared "
                               "between threads. Use a temporary file instead.")
        if not limits.is_seconds(busy_timeout):
            raise CFKVConfigurationError(f"BUSY_TIMEOUT must be a number of seconds > 0, not {busy_timeout!r}.",
                                         "django_cfkv.E010")
        self.path = str(path)
        self.namespace = namespace
        self.db = Database.for_path(self.path, busy_timeout)

    def __repr__(self) -> str:
        return f"LocalKV({self.path!r}, namespace={self.namespace!r})"

    def close_thread_connection(self) -> None:
        """Close the calling thread's connection to the file, if any (for a thread about to end)."""
        self.db.close_thread_connection()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.connection().execute(sql, params)

    def _live(self, key_bytes: bytes, now: float) -> Any:
        return self._execute(
            "SELECT value, expiration, metadata FROM kv WHERE ns=? AND key=? "
            "AND (expiration IS NULL OR expiration > ?)",
            (self.namespace, key_bytes, now),
        ).fetchone()

    # Reads

    @store_errors
    def get(self, key: str) -> bytes | None:
        """Return the value's bytes, or None when the key is missing or expired."""
        limits.validate_key(key)
        row = self._live(key.encode("utf-8"), clock.now())
        return None if row is None else bytes(row[0])

    @store_errors
    def get_with_metadata(self, key: str) -> ValueWithMetadata | None:
        """Return ValueWithMetadata(value, metadata, expiration), or None when missing."""
        limits.validate_key(key)
        row = self._live(key.encode("utf-8"), clock.now())
        if row is None:
            return None
        return ValueWithMetadata(bytes(row[0]), json.loads(row[2]) if row[2] else None, row[1])

    def get_metadata(self, key: str) -> Any:
        """Return the key's metadata (None when it has none or is missing)."""
        entry = self.get_with_metadata(key)
        return None if entry is None else entry.metadata

    @store_errors
    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return {key: bytes} for the keys that exist. Values must be UTF-8 text, as on KV's bulk get."""
        keys = limits.validate_keys(keys)
        now = clock.now()
        found: dict[str, bytes] = {}
        for key in keys:
            row = self._live(key.encode("utf-8"), now)
            if row is not None:
                value = bytes(row[0])
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    # As KVClient raises it from Cloudflare's (and the emulator's) 400 answer.
                    raise KVAPIError(  # the key is not quoted: it may be a session id
                        "KV's bulk get returns text values only, and one of the keys holds binary data. "
                        "Read binary values with get().", status=400,
                        errors=[{"code": 10012, "message": "malformed value"}],
                    ) from None
                found[key] = value
        return found

    @store_errors
    def list_keys(self, prefix: str | None = None, limit: int = 1000, cursor: str | None = None) -> KeyPage:
        """Return one KeyPage of live keys in UTF-8 byte order; its cursor is None on the last page."""
        limits.validate_list_limit(limit)
        sql = "SELECT key, expiration, metadata FROM kv WHERE ns=? AND (expiration IS NULL OR expiration > ?)"
        params = [self.namespace, int(clock.now())]
        if prefix:
            low, high = _prefix_range(prefix)
            sql += " AND key >= ?"
            params.append(low)
            if high is not None:
                sql += " AND key < ?"
                params.append(high)
        if cursor:
            sql += " AND key > ?"
            params.append(_decode_cursor(cursor))
        sql += " ORDER BY key LIMIT ?"
        params.append(limit + 1)
        rows = self._execute(sql, params).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        keys = [
            KeyInfo(bytes(k).decode("utf-8"), exp, json.loads(meta) if meta else None)
            for k, exp, meta in rows
        ]
        next_cursor = _encode_cursor(bytes(rows[-1][0])) if more else None
        return KeyPage(keys, next_cursor)

    # Writes

    @store_errors
    def put(self, key: str, value: bytes | str, *, expiration: float | None = None,
            expiration_ttl: float | None = None, metadata: Any = None) -> None:
        """Store ``value`` under ``key``, replacing value, expiry and metadata."""
        row = self._row(key, value, expiration, expiration_ttl, metadata)
        self._write([row])

    @store_errors
    def put_many(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Store many items: dicts with ``key``, ``value`` and optional ``expiration``,
        ``expiration_ttl``, ``metadata``. All are checked before any is written."""
        rows = [
            self._row(
                item["key"], item["value"], item.get("expiration"),
                item.get("expiration_ttl"), item.get("metadata"),
            )
            for item in items
        ]
        self._write(rows)

    def _row(self, key: str, value: bytes | str, expiration: float | None, expiration_ttl: float | None,
             metadata: Any) -> tuple[str, bytes, bytes, int | None, str | None]:
        limits.validate_key(key)
        value = limits.validate_value(value)
        meta = limits.encode_metadata(metadata)
        exp = limits.validate_expiry(expiration, expiration_ttl)
        return (self.namespace, key.encode("utf-8"), value, exp, meta)

    def _write(self, rows: list[tuple[str, bytes, bytes, int | None, str | None]]) -> None:
        conn = self.db.connection()
        with transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO kv (ns, key, value, expiration, metadata) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self.db.purge_expired(clock.now())

    @store_errors
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        limits.validate_key(key)
        conn = self.db.connection()
        with transaction(conn):
            conn.execute("DELETE FROM kv WHERE ns=? AND key=?", (self.namespace, key.encode("utf-8")))

    @store_errors
    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete every key in ``keys``."""
        keys = limits.validate_keys(keys)
        conn = self.db.connection()
        with transaction(conn):
            conn.executemany(
                "DELETE FROM kv WHERE ns=? AND key=?",
                [(self.namespace, k.encode("utf-8")) for k in keys],
            )
