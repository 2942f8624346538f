"""The namespaces one SQLite file holds, as an account holds them: their records (id, title), and
whole-namespace copies and deletes. The emulator serves Cloudflare's namespace routes from these.

A namespace needs no record to hold keys (any id is a namespace, as a LocalKV's
``namespace``); a record gives it a title and a place in the account's list.
"""

import os
import sqlite3

from .database import DEFAULT_BUSY_TIMEOUT, Database, store_errors, transaction


class LocalNamespaces:
    """The namespace records of the SQLite file at ``path``."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = str(path)
        self.db = Database.for_path(self.path, busy_timeout)

    def __repr__(self) -> str:
        return f"LocalNamespaces({self.path!r})"

    @store_errors
    def list_namespaces(self) -> list[dict[str, str]]:
        """Return [{"id", "title"}] of the namespaces created in this file."""
        rows = self.db.connection().execute("SELECT id, title FROM namespaces ORDER BY id").fetchall()
        return [{"id": i, "title": t} for i, t in rows]

    @store_errors
    def create_namespace(self, namespace_id: str, title: str) -> bool:
        """Record a namespace; return False when the title is taken."""
        try:
            self.db.connection().execute("INSERT INTO namespaces (id, title) VALUES (?, ?)", (namespace_id, title))
        except sqlite3.IntegrityError:
            return False
        return True

    @store_errors
    def rename_namespace(self, namespace_id: str, title: str) -> bool:
        """Give a namespace (recorded or not) ``title``; return False when another one has it."""
        try:
            self.db.connection().execute("INSERT INTO namespaces (id, title) VALUES (?, ?) "
                                         "ON CONFLICT (id) DO UPDATE SET title = excluded.title",
                                         (namespace_id, title))
        except sqlite3.IntegrityError:
            return False
        return True

    @store_errors
    def copy_namespace(self, source_id: str, target_id: str) -> None:
        """Copy every entry of one namespace into another, as stored: value, metadata and KV expiry.

        No put() can do it: KV refuses an expiry less than 60 s away, which an
        entry written a while ago may well have.
        """
        conn = self.db.connection()
        with transaction(conn):
            conn.execute("INSERT OR REPLACE INTO kv (ns, key, value, expiration, metadata) "
                         "SELECT ?, key, value, expiration, metadata FROM kv WHERE ns=?", (target_id, source_id))

    @store_errors
    def delete_namespace(self, namespace_id: str) -> None:
        """Delete a namespace's record and every key in it."""
        conn = self.db.connection()
        with transaction(conn):
            conn.execute("DELETE FROM kv WHERE ns=?", (namespace_id,))
            conn.execute("DELETE FROM namespaces WHERE id=?", (namespace_id,))
