"""The embedded store: the KV interface over one SQLite file. Knows no Django.

- ``database``    the file: its tables, a connection per thread, transactions, sqlite3's errors as KVErrors
- ``store``       ``LocalKV``: one namespace's KV semantics (expiry, metadata, listing, cursors, limits)
- ``namespaces``  ``LocalNamespaces``: the file's namespace records, which the emulator serves
"""

from .database import DEFAULT_BUSY_TIMEOUT
from .namespaces import LocalNamespaces
from .store import LocalKV

__all__ = ["DEFAULT_BUSY_TIMEOUT", "LocalKV", "LocalNamespaces"]
