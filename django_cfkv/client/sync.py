"""KVClient: Workers KV's REST API, one blocking call at a time over :mod:`django_cfkv.transport`.

Each method builds its call (``request``), sends it, and reads the answer
(``answer``, ``errors``, ``bulk``): those do no I/O, so this module holds only the
sending. It knows nothing of Django.

Consistency (Cloudflare's, not ours to fix): reads may be up to ~60 s stale at
other locations, there is no atomic compare-and-set, and a key may be written
at most once per second.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import requests

from .. import limits
from ..exceptions import KVError
from ..transport import DEFAULT_DEADLINE, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, ResponseTooLargeError, Transport
from ..types import KeyPage, Paging, ValueWithMetadata
from . import answer, bulk, errors, request
from .request import KVRequest
from .urls import DEFAULT_BASE_URL, account_url, namespace_url


class KVClient(Paging):
    """One Workers KV namespace, reached through Cloudflare's REST API.

    Safe to share between threads: all state is in one pooled transport (see
    :mod:`django_cfkv.transport`). Every method validates its input before any
    I/O and raises a :class:`~django_cfkv.exceptions.KVError` on failure,
    including an answer of the wrong shape (a ``KVAPIError``).
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
        """Close pooled connections."""
        self.transport.close()

    # Reads

    def get(self, key: str) -> bytes | None:
        """Return the value's bytes, or None when the key does not exist. One call."""
        response = self._read(request.get_value(key))
        return None if response is None else response.content

    def get_with_metadata(self, key: str) -> ValueWithMetadata | None:
        """Return ValueWithMetadata, or None when missing.

        Two calls (value, then metadata): the REST API has no single call that
        returns a binary value with its metadata. A missing value costs one.
        """
        response = self._read(request.get_value(key))
        if response is None:
            return None
        expiration = answer.value_expiration(response)
        return ValueWithMetadata(response.content, self.get_metadata(key), expiration)

    def get_metadata(self, key: str) -> Any:
        """Return the key's metadata (None when it has none or is missing). One call."""
        call = request.get_metadata(key)
        response = self._read(call)
        return None if response is None else answer.metadata(response, call)

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return {key: bytes} for the keys that exist, in ceil(n/100) bulk calls.

        KV's bulk get returns text only: values must be UTF-8.
        """
        found = {}
        for chunk in bulk.chunks(request.unique_keys(keys), limits.BULK_GET_MAX_KEYS):
            found.update(self._bulk_get(chunk))
        return found

    def _bulk_get(self, keys: list[str]) -> dict[str, bytes]:
        call = request.bulk_get(keys)
        try:
            response = self._send(call)
        except ResponseTooLargeError:
            # KV limits one value to 25 MiB, not a bulk answer: ask for fewer
            # keys at a time, and read a value too large for an answer alone.
            if len(keys) == 1:
                value = self.get(keys[0])
                return {} if value is None else {keys[0]: value}
            half = len(keys) // 2
            return {**self._bulk_get(keys[:half]), **self._bulk_get(keys[half:])}
        return answer.bulk_values(response, call)

    def list_keys(self, prefix: str | None = None, limit: int = 1000, cursor: str | None = None) -> KeyPage:
        """Return one KeyPage (up to ``limit`` keys, 10..1000); cursor None on the last page."""
        call = request.list_keys(prefix, limit, cursor)
        return answer.key_page(self._send(call), call)

    # Writes

    def put(self, key: str, value: bytes | str, *, expiration: float | None = None,
            expiration_ttl: float | None = None, metadata: Any = None) -> None:
        """Write one value (raw body; multipart/form-data when metadata is given). One call."""
        call = request.put(key, value, expiration=expiration, expiration_ttl=expiration_ttl, metadata=metadata)
        answer.envelope(self._send(call), call)  # a 200 without success: true is not an acknowledged write

    def put_many(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Write many items (dicts with ``key``, ``value`` and optional ``expiration``,
        ``expiration_ttl``, ``metadata``): one bulk call per 10,000 pairs or 100 MB.

        Raises KVBulkError naming every key that was not written.
        """
        self._bulk("write", request.bulk_put(items))

    def delete(self, key: str) -> None:
        """Delete one key; deleting a missing key is not an error. One call."""
        call = request.delete(key)
        response = self._read(call)
        if response is not None:
            answer.envelope(response, call)  # a 200 without success: true did not delete

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete keys in one bulk call per 10,000; KVBulkError names any left behind."""
        self._bulk("delete", request.bulk_delete(keys))

    def _bulk(self, action: str, calls: list[KVRequest]) -> None:
        """Send bulk calls in turn; raise KVBulkError naming every key not done (see bulk.BulkRun)."""
        run = bulk.BulkRun(action, calls)
        for index, call in enumerate(calls):
            try:
                run.answered(answer.unsuccessful(self._send(call), call))  # a 200 that is not an envelope fails
            except KVError as exc:
                raise run.stopped(index, exc) from exc
        run.finish()

    # Namespaces

    def list_namespaces(self) -> list[dict[str, Any]]:
        """Return every namespace of the account as [{"id", "title", ...}]."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            call = request.list_namespaces(page)
            batch, more = answer.namespace_page(self._send(call), call, page, len(found))
            found += batch
            if not more:
                return found
            page += 1

    def create_namespace(self, title: str) -> dict[str, Any]:
        """Create a namespace; return it as {"id", "title"}. Not retried (not idempotent)."""
        call = request.create_namespace(title)
        return answer.new_namespace(self._send(call), call)

    # Sending

    def _send(self, call: KVRequest) -> requests.Response:
        """Send one call; return its answer, or raise the KVError its status maps to (a key miss included)."""
        response = self.transport.request(
            call.method, (self._account_url if call.account else self._url) + call.path, endpoint=call.endpoint,
            idempotent=call.idempotent, max_bytes=call.max_bytes, params=call.params, data=call.body,
            headers=call.headers)
        if response.status_code >= 300:
            raise errors.error_for(response, call)
        return response

    def _read(self, call: KVRequest) -> requests.Response | None:
        """As _send, but a key miss (404, code 10009) is None."""
        try:
            return self._send(call)
        except KVError as exc:
            if errors.is_key_miss(exc):
                return None
            raise
