"""What each call sends, built without I/O: a KVRequest (method, path, query, body) per operation.

Every builder validates its input against KV's limits first (KVValueError), so
nothing invalid is ever sent. Bulk writes and deletes become one KVRequest per
batch that fits KV's limits.
"""

import json
import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .. import limits
from . import bulk
from .urls import encode_key

NAMESPACES_PER_PAGE = 100
# Read-only: every call with such a body shares one (the HTTP libraries copy what they send).
_OCTETS = MappingProxyType({"Content-Type": "application/octet-stream"})
_JSON = MappingProxyType({"Content-Type": "application/json"})


class KVRequest(NamedTuple):  # a tuple: made for every call, at a fraction of a frozen dataclass's cost
    """One call, as any HTTP library can send it."""

    method: str
    path: str  # after the namespace's URL, or the account's when ``account``
    endpoint: str  # the name the call is counted under
    params: dict[str, Any] | None = None
    body: bytes | str | None = None
    headers: Mapping[str, str] | None = None  # its Content-Type, when it has a body
    keys: tuple[str, ...] = ()  # the keys it names: replaced with <key> in a server's error text
    idempotent: bool = True  # retried on a transient failure
    account: bool = False
    max_bytes: int = limits.MAX_RESPONSE_BYTES  # the largest answer read


def get_value(key: str) -> KVRequest:
    """Read one value: raw bytes, not an envelope."""
    return KVRequest("GET", f"/values/{encode_key(key)}", "get", keys=(key,), max_bytes=limits.MAX_VALUE_BYTES)


def get_metadata(key: str) -> KVRequest:
    return KVRequest("GET", f"/metadata/{encode_key(key)}", "get_metadata", keys=(key,))


def bulk_get(keys: list[str]) -> KVRequest:
    """Read up to 100 (validated) keys' values as text."""
    return _json("POST", "/bulk/get", "bulk_get", {"keys": keys, "type": "text"}, keys)


def list_keys(prefix: str | None, limit: int, cursor: str | None) -> KVRequest:
    limits.validate_list_limit(limit)
    params: dict[str, Any] = {"limit": limit}
    if prefix:
        params["prefix"] = prefix
    if cursor:
        params["cursor"] = cursor
    return KVRequest("GET", "/keys", "list", params=params, keys=(prefix,) if prefix else ())


def put(key: str, value: bytes | str, *, expiration: float | None = None, expiration_ttl: float | None = None,
        metadata: Any = None) -> KVRequest:
    """Write one value: a raw body, or multipart/form-data when there is metadata."""
    path = f"/values/{encode_key(key)}"
    value = limits.validate_value(value)
    meta = limits.encode_metadata(metadata)
    params = None
    if expiration is not None or expiration_ttl is not None:  # most writes have neither: no calls for them
        limits.validate_expiry(expiration, expiration_ttl)
        params = _expiry_params(expiration, expiration_ttl)
    if meta is None:
        return KVRequest("PUT", path, "put", params=params, body=value, headers=_OCTETS, keys=(key,))
    body, content_type = form(value, meta)
    return KVRequest("PUT", path, "put", params=params, body=body, headers={"Content-Type": content_type},
                     keys=(key,))


def delete(key: str) -> KVRequest:
    return KVRequest("DELETE", f"/values/{encode_key(key)}", "delete", keys=(key,))


def bulk_put(items: Iterable[Mapping[str, Any]]) -> list[KVRequest]:
    """Write many items: one call per 10,000 pairs or 100 MB, every item validated before any is sent."""
    batches = list(bulk.batches([bulk.item(item) for item in items]))
    return [KVRequest("PUT", "/bulk", "bulk_put", body=body, headers=_JSON, keys=tuple(keys))
            for keys, body in batches]


def bulk_delete(keys: Iterable[str]) -> list[KVRequest]:
    """Delete many keys: one call per 10,000, every key validated before any is sent."""
    chunks = bulk.chunks(limits.validate_keys(keys), limits.BULK_DELETE_MAX_KEYS)
    return [_json("POST", "/bulk/delete", "bulk_delete", chunk, chunk) for chunk in chunks]


def list_namespaces(page: int) -> KVRequest:
    return KVRequest("GET", "", "namespaces", params={"page": page, "per_page": NAMESPACES_PER_PAGE}, account=True)


def create_namespace(title: str) -> KVRequest:
    """Create a namespace: not idempotent, so never retried (a retry could make two)."""
    return _json("POST", "", "namespaces", {"title": title}, (), idempotent=False, account=True)


def _json(method: str, path: str, endpoint: str, data: Any, keys: Iterable[str], **options: Any) -> KVRequest:
    # Compact, so bulk size limits are measured on what is sent.
    return KVRequest(method, path, endpoint, body=json.dumps(data, separators=(",", ":")),
                     headers=_JSON, keys=tuple(keys), **options)


def form(value: bytes, metadata: str) -> tuple[bytes, str]:
    """Return (body, Content-Type) of the multipart form of a write with metadata.

    The value is a file part (it has a filename): the web platform's form-data
    parser (a Worker's ``request.formData()``) decodes a part without one as
    UTF-8 text, which alters a binary value. Built by hand: requests' encoder
    costs more CPU than the rest of the write (see bench/bench_client.py).
    """
    boundary = os.urandom(16).hex().encode()  # 128 random bits: no value holds it by chance
    body = b"".join((
        b"--", boundary, b'\r\nContent-Disposition: form-data; name="value"; filename="value"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n", value,
        b"\r\n--", boundary, b'\r\nContent-Disposition: form-data; name="metadata"\r\n'
        b"Content-Type: application/json\r\n\r\n", metadata.encode("utf-8"),
        b"\r\n--", boundary, b"--\r\n",
    ))
    return body, "multipart/form-data; boundary=" + boundary.decode()


def _expiry_params(expiration: float | None, expiration_ttl: float | None) -> dict[str, int] | None:
    if expiration_ttl is not None:
        return {"expiration_ttl": int(expiration_ttl)}
    if expiration is not None:
        return {"expiration": int(expiration)}
    return None
