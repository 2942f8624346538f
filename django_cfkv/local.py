"""LocalKV: the KV interface over one SQLite file.

It keeps Workers KV's semantics (expiry, metadata, listing in UTF-8 byte order
with opaque cursors, the same limits) so that code tested on it behaves the same
on Cloudflare. SQLite in WAL mode makes it safe for several threads and
processes (runserver's reloader, gunicorn workers); a write is acknowledged only
once it is committed, so it survives the process being killed.

Unlike Cloudflare, it is strongly consistent: a write is seen at once everywhere.

Failures are KVErrors, never raw ``sqlite3`` errors: a write lock held past
``busy_timeout`` (by another process, say) is a ``KVTimeout``, and a file that
cannot be opened, read or written (unreadable, corrupt, a full disk) a
``KVConnectionError``. Both are the "store cannot be reached" errors that the
cache's IGNORE_EXCEPTIONS and the session engines degrade on.
"""

import base64
import binascii
import functools
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from . import clock, limits
from .exceptions import CFKVConfigurationError, KVAPIError, KVConnectionError, KVTimeout, KVValueError
from .types import KeyInfo, KeyPage, Paging, ValueWithMetadata

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    expiration INTEGER,
    metadata TEXT,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS namespaces (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL UNIQUE
);
"""

_PURGE_EVERY = 60.0  # seconds between sweeps of rows whose expiry has passed
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a write waits for another connection's write lock

P = ParamSpec("P")
R = TypeVar("R")


class _Database:
    """One SQLite file: a connection per thread (and per process after a fork)."""

    _lock = threading.Lock()
    _instances: dict[tuple[str, float], "_Database"] = {}

    @classmethod
    def for_path(cls, path: str | os.PathLike[str], busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> "_Database":
        key = (str(Path(path).resolve()), float(busy_timeout))
        with cls._lock:
            db = cls._instances.get(key)
            if db is None:
                db = cls._instances[key] = cls(*key)
            return db

    def __init__(self, path: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._last_purge = 0.0
        self._setup_lock = threading.Lock()
        self._set_up = False

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                self._set_up_file(conn)
            except BaseException:
                conn.close()
                raise
            # NORMAL in WAL mode: a committed write survives the process being
            # killed; only an OS crash or power loss could lose the last ones.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _set_up_file(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL and create the tables, once per process.

        WAL mode is stored in the file, so later connections inherit it. The
        switch can fail at once with "database is locked" (SQLite's busy
        timeout does not cover it) while another process or thread holds the
        file, so it is retried for up to the busy timeout.
        """
        with self._setup_lock:
            if self._set_up:
                return
            give_up = clock.monotonic() + self.busy_timeout
            while True:
                try:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or clock.monotonic() >= give_up:
                        raise
                    clock.sleep(0.05)
            self._set_up = True

    def close_thread_connection(self) -> None:
        """Close the calling thread's connection, if any (for a thread about to end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def purge_expired(self, now: float) -> None:
        if now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        conn = self.connection()
        with _transaction(conn):
            conn.execute("DELETE FROM kv WHERE expiration IS NOT NULL AND expiration <= ?", (int(now),))


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


def _store_errors(method: Callable[Concatenate["LocalKV", P], R]) -> Callable[Concatenate["LocalKV", P], R]:
    """Raise sqlite3's errors in ``method`` as KVErrors (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: "LocalKV", *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise KVTimeout(
                    f"The embedded store {self.path} stayed locked by another connection for "
                    f"{self._db.busy_timeout:g} s (BUSY_TIMEOUT): a long write elsewhere, such as a "
                    "backup or an open sqlite3 shell, holds it.") from exc
            raise KVConnectionError(
                f"The embedded store {self.path} cannot be used ({type(exc).__name__}: {text}). Check "
                "that PATH is a readable and writable django-cfkv SQLite file on a disk with room.") from exc

    return wrapper


class LocalKV(Paging):
    """Workers KV's interface over a SQLite file; ``namespace`` keeps several apart in one file.

    ``busy_timeout`` is how long a write waits for another connection's write
    lock before it fails with KVTimeout (in settings, the alias' BUSY_TIMEOUT).
    """

    def __init__(self, path: str | os.PathLike[str], namespace: str = "", *,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file::memory:"):
            # SQLite gives each connection (so each thread) its own in-memory database.
            raise KVValueError("LocalKV needs a file path: an in-memory SQLite database is not shared "
                               "between threads. Use a temporary file instead.")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)) or \
                not math.isfinite(busy_timeout) or busy_timeout <= 0:
            raise CFKVConfigurationError(f"BUSY_TIMEOUT must be a number of seconds > 0, not {busy_timeout!r}.",
                                         "django_cfkv.E010")
        self.path = str(path)
        self.namespace = namespace
        self._db = _Database.for_path(self.path, busy_timeout)

    def __repr__(self) -> str:
        return f"LocalKV({self.path!r}, namespace={self.namespace!r})"

    def close_thread_connection(self) -> None:
        """Close the calling thread's connection to the file, if any (for a thread about to end)."""
        self._db.close_thread_connection()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.connection().execute(sql, params)

    def _live(self, key_bytes: bytes, now: float) -> Any:
        return self._execute(
            "SELECT value, expiration, metadata FROM kv WHERE ns=? AND key=? "
            "AND (expiration IS NULL OR expiration > ?)",
            (self.namespace, key_bytes, now),
        ).fetchone()

    # Reads

    @_store_errors
    def get(self, key: str) -> bytes | None:
        """Return the value's bytes, or None when the key is missing or expired."""
        limits.validate_key(key)
        row = self._live(key.encode("utf-8"), clock.now())
        return None if row is None else bytes(row[0])

    @_store_errors
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

    @_store_errors
    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return {key: bytes} for the keys that exist. Values must be UTF-8 text, as on KV's bulk get."""
        keys = list(dict.fromkeys(keys))
        for key in keys:
            limits.validate_key(key)
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

    @_store_errors
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

    @_store_errors
    def put(self, key: str, value: bytes | str, *, expiration: float | None = None,
            expiration_ttl: float | None = None, metadata: Any = None) -> None:
        """Store ``value`` under ``key``, replacing value, expiry and metadata."""
        row = self._row(key, value, expiration, expiration_ttl, metadata)
        self._write([row])

    @_store_errors
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
        conn = self._db.connection()
        with _transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO kv (ns, key, value, expiration, metadata) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self._db.purge_expired(clock.now())

    @_store_errors
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        limits.validate_key(key)
        conn = self._db.connection()
        with _transaction(conn):
            conn.execute("DELETE FROM kv WHERE ns=? AND key=?", (self.namespace, key.encode("utf-8")))

    @_store_errors
    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete every key in ``keys``."""
        keys = list(keys)
        for key in keys:
            limits.validate_key(key)
        conn = self._db.connection()
        with _transaction(conn):
            conn.executemany(
                "DELETE FROM kv WHERE ns=? AND key=?",
                [(self.namespace, k.encode("utf-8")) for k in keys],
            )

    # Namespaces (used by the emulator and the command)

    @_store_errors
    def list_namespaces(self) -> list[dict[str, str]]:
        """Return [{"id", "title"}] of the namespaces created in this file."""
        rows = self._execute("SELECT id, title FROM namespaces ORDER BY id").fetchall()
        return [{"id": i, "title": t} for i, t in rows]

    @_store_errors
    def create_namespace(self, namespace_id: str, title: str) -> bool:
        """Record a namespace; return False when the title is taken."""
        try:
            self._execute("INSERT INTO namespaces (id, title) VALUES (?, ?)", (namespace_id, title))
        except sqlite3.IntegrityError:
            return False
        return True

    @_store_errors
    def rename_namespace(self, namespace_id: str, title: str) -> bool:
        """Give a namespace (recorded or not) ``title``; return False when another one has it."""
        try:
            self._execute("INSERT INTO namespaces (id, title) VALUES (?, ?) "
                          "ON CONFLICT (id) DO UPDATE SET title = excluded.title", (namespace_id, title))
        except sqlite3.IntegrityError:
            return False
        return True

    @_store_errors
    def copy_namespace(self, source_id: str, target_id: str) -> None:
        """Copy every entry of one namespace into another, as stored: value, metadata and KV expiry.

        No put() can do it: KV refuses an expiry less than 60 s away, which an
        entry written a while ago may well have.
        """
        conn = self._db.connection()
        with _transaction(conn):
            conn.execute("INSERT OR REPLACE INTO kv (ns, key, value, expiration, metadata) "
                         "SELECT ?, key, value, expiration, metadata FROM kv WHERE ns=?", (target_id, source_id))

    @_store_errors
    def delete_namespace(self, namespace_id: str) -> None:
        """Delete a namespace's record and every key in it."""
        conn = self._db.connection()
        with _transaction(conn):
            conn.execute("DELETE FROM kv WHERE ns=?", (namespace_id,))
            conn.execute("DELETE FROM namespaces WHERE id=?", (namespace_id,))


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT: a bulk write lands whole or not at all, and the
    write lock is taken up front, where SQLite's busy timeout applies (a write
    that starts as a read can fail at once with "database is locked" in WAL mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> Literal[False]:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
