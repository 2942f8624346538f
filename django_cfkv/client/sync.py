"""KVClient: Workers KV's REST API over :mod:`django_cfkv.transport`, blocking and awaited.

Each method follows its operation's plan (:mod:`.plans`: the calls it makes and what it makes
of their answers, no I/O) through the transport: blocking here, awaited in the twins of
:mod:`.aio`. It knows nothing of Django.

Consistency (Cloudflare's, not ours to fix): reads may be up to ~60 s stale at
other locations, there is no atomic compare-and-set, and a key may be written
at most once per second.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from ..transport import DEFAULT_DEADLINE, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Transport
from ..types import KeyPage, Paging, ValueWithMetadata
from . import plans
from .aio import AsyncMethods
from .plans import Call, Plan
from .urls import DEFAULT_BASE_URL, account_url, namespace_url


class KVClient(AsyncMethods, Paging):
    """One Workers KV namespace, reached through Cloudflare's REST API.

    Safe to share between threads and event loops: all state is in one pooled
    transport (see :mod:`django_cfkv.transport`). Every method validates its input
    before any I/O and raises a :class:`~django_cfkv.exceptions.KVError` on failure,
    including an answer of the wrong shape (a ``KVAPIError``). Every method has an
    async twin named with an ``a`` in front (``aget``, ``aput``, ``aiter_keys``...).
    """

    def __init__(self, account_id: str, namespace_id: str, api_token: str, *, base_url: str = DEFAULT_BASE_URL,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, max_retries: int = DEFAULT_MAX_RETRIES,
                 deadline: float = DEFAULT_DEADLINE) -> None:
        self.account_id = account_id
        self.namespace_id = namespace_id
        self.base_url = base_url.rstrip("/")
        self.transport = Transport(api_token, timeout=timeout, max_retries=max_retries, deadline=deadline)
        self._account_url = account_url(self.base_url, account_id)
        self._url = namespace_url(self._account_url, namespace_id)

    def __repr__(self) -> str:
        return (f"KVClient(account_id={self.account_id!r}, namespace_id={self.namespace_id!r}, "
                f"base_url={self.base_url!r})")

    def close(self) -> None:
        """Close pooled connections (those of every event loop too)."""
        self.transport.close()

    def _run(self, operation: Plan[Any] | Call) -> Any:
        return self.transport.run(*plans.steps(operation, self.transport, self._url, self._account_url))

    # Reads

    def get(self, key: str) -> bytes | None:
        """Return the value's bytes, or None when the key does not exist. One call."""
        return self._run(plans.get(key))

    def get_with_metadata(self, key: str) -> ValueWithMetadata | None:
        """Return ValueWithMetadata, or None when missing.

        Two calls (value, then metadata): the REST API has no single call that
        returns a binary value with its metadata. A missing value costs one.
        """
        return self._run(plans.get_with_metadata(key))

    def get_metadata(self, key: str) -> Any:
        """Return the key's metadata (None when it has none or is missing). One call."""
        return self._run(plans.get_metadata(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return {key: bytes} for the keys that exist, in ceil(n/100) bulk calls.

        KV's bulk get returns text only: values must be UTF-8.
        """
        return self._run(plans.get_many(keys))

    def list_keys(self, prefix: str | None = None, limit: int = 1000, cursor: str | None = None) -> KeyPage:
        """Return one KeyPage (up to ``limit`` keys, 10..1000); cursor None on the last page."""
        return self._run(plans.list_keys(prefix, limit, cursor))

    # Writes

    def put(self, key: str, value: bytes | str, *, expiration: float | None = None,
            expiration_ttl: float | None = None, metadata: Any = None) -> None:
        """Write one value (raw body; multipart/form-data when metadata is given). One call."""
        self._run(plans.put(key, value, expiration=expiration, expiration_ttl=expiration_ttl, metadata=metadata))

    def put_many(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Write many items (dicts with ``key``, ``value`` and optional ``expiration``,
        ``expiration_ttl``, ``metadata``): one bulk call per 10,000 pairs or 100 MB.

        Raises KVBulkError naming every key that was not written.
        """
        self._run(plans.put_many(items))

    def delete(self, key: str) -> None:
        """Delete one key; deleting a missing key is not an error. One call."""
        self._run(plans.delete(key))

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete keys in one bulk call per 10,000; KVBulkError names any left behind."""
        self._run(plans.delete_many(keys))

    # Namespaces

    def list_namespaces(self) -> list[dict[str, Any]]:
        """Return every namespace of the account as [{"id", "title", ...}]."""
        return self._run(plans.list_namespaces())

    def create_namespace(self, title: str) -> dict[str, Any]:
        """Create a namespace; return it as {"id", "title"}. Not retried (not idempotent)."""
        return self._run(plans.create_namespace(title))
