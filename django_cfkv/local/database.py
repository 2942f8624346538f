"""One SQLite file as django-cfkv keeps it: its tables, a connection per thread, transactions,
and sqlite3's errors as KVErrors.

SQLite in WAL mode makes the file safe for several threads and processes
(runserver's reloader, gunicorn workers); a write is acknowledged only once it
is committed, so it survives the process being killed.

Failures are KVErrors, never raw ``sqlite3`` errors: a write lock held past
``busy_timeout`` (by another process, say) is a ``KVTimeout``, and a file that
cannot be opened, read or written (unreadable, corrupt, a full disk) a
``KVConnectionError``. Both are the "store cannot be reached" errors that the
cache's IGNORE_EXCEPTIONS and the session engines degrade on.
"""

import functools
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, Protocol, TypeVar

from .. import clock
from ..exceptions import KVConnectionError, KVTimeout

SCHEMA = """
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

PURGE_EVERY = 60.0  # seconds between sweeps of rows whose expiry has passed
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a write waits for another connection's write lock

P = ParamSpec("P")
R = TypeVar("R")


class Database:
    """One SQLite file: a connection per thread (and per process after a fork)."""

    _lock = threading.Lock()
    _instances: dict[tuple[str, float], "Database"] = {}

    @classmethod
    def for_path(cls, path: str | os.PathLike[str], busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> "Database":
        """Return the one Database of ``path`` (and busy timeout) in this process."""
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
        """Return this thread's connection, opening it (and setting the file up) on first use."""
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
                    conn.executescript(SCHEMA)
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
        """Delete rows whose expiry has passed, at most once a minute."""
        if now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        conn = self.connection()
        with transaction(conn):
            conn.execute("DELETE FROM kv WHERE expiration IS NOT NULL AND expiration <= ?", (int(now),))


class transaction:
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


class OnFile(Protocol):
    """Anything that works on one Database (the store, the namespace records)."""

    path: str
    db: Database


S = TypeVar("S", bound=OnFile)


def store_errors(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Raise sqlite3's errors in ``method`` as KVErrors (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise KVTimeout(
                    f"The embedded store {self.path} stayed locked by another connection for "
                    f"{self.db.busy_timeout:g} s (BUSY_TIMEOUT): a long write elsewhere, such as a "
                    "backup or an open sqlite3 shell, holds it.") from exc
            raise KVConnectionError(
                f"The embedded store {self.path} cannot be used ({type(exc).__name__}: {text}). Check "
                "that PATH is a readable and writable django-cfkv SQLite file on a disk with room.") from exc

    return wrapper
