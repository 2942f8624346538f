"""KVClient: Workers KV's REST API over :mod:`django_cfkv.transport`.

This module knows the URLs, how keys are encoded, the JSON envelope, and how a
status becomes an exception. It knows nothing of Django.

Consistency (Cloudflare's, not ours to fix): reads may be up to ~60 s stale at
other locations, there is no atomic compare-and-set, and a key may be written
at most once per second.
"""

import base64
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from . import limits
from .exceptions import (
    KVAPIError,
    KVAuthError,
    KVBulkError,
    KVError,
    KVMalformedResponseError,
    KVNotFoundError,
    KVRateLimitError,
)
from .transport import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ResponseTooLargeError,
    Transport,
    account_block,
    parse_retry_after,
)
from .types import KeyInfo, KeyPage, Paging, ValueWithMetadata

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
KEY_NOT_FOUND = 10009
TOKEN_PERMISSION = "Workers KV Storage Read/Write"


def encode_key(key: str) -> str:
    """Percent-encode ``key`` for a URL path with nothing left safe, after validating it."""
    return quote(limits.validate_key(key), safe="")


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
        self._account_url = f"{self.base_url}/accounts/{quote(str(account_id), safe='')}/storage/kv/namespaces"
        self._url = f"{self._account_url}/{quote(str(namespace_id), safe='')}"

    def __repr__(self) -> str:
        return (f"KVClient(account_id={self.account_id!r}, namespace_id={self.namespace_id!r}, "
                f"base_url={self.base_url!r})")

    def close(self) -> None:
        """Close pooled connections."""
        self.transport.close()

    # Reads

    def get(self, key: str) -> bytes | None:
        """Return the value's bytes, or None when the key does not exist. One call."""
        response = self._call("GET", f"/values/{encode_key(key)}", "get", missing_ok=True, keys=(key,),
                              max_bytes=limits.MAX_VALUE_BYTES)
        return None if response is None else response.content

    def get_with_metadata(self, key: str) -> ValueWithMetadata | None:
        """Return ValueWithMetadata, or None when missing.

        Two calls (value, then metadata): the REST API has no single call that
        returns a binary value with its metadata. A missing value costs one.
        """
        response = self._call("GET", f"/values/{encode_key(key)}", "get", missing_ok=True, keys=(key,),
                              max_bytes=limits.MAX_VALUE_BYTES)
        if response is None:
            return None
        expiration = _expiration(response.headers.get("expiration"), response)
        return ValueWithMetadata(response.content, self.get_metadata(key), expiration)

    def get_metadata(self, key: str) -> Any:
        """Return the key's metadata (None when it has none or is missing). One call."""
        response = self._call("GET", f"/metadata/{encode_key(key)}", "get_metadata", missing_ok=True, keys=(key,))
        return None if response is None else _envelope(response).get("result")

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return {key: bytes} for the keys that exist, in ceil(n/100) bulk calls.

        KV's bulk get returns text only: values must be UTF-8.
        """
        keys = list(dict.fromkeys(keys))
        for key in keys:
            limits.validate_key(key)
        found = {}
        for chunk in _chunks(keys, limits.BULK_GET_MAX_KEYS):
            found.update(self._bulk_get(chunk))
        return found

    def _bulk_get(self, keys: list[str]) -> dict[str, bytes]:
        try:
            response = self._call("POST", "/bulk/get", "bulk_get", json={"keys": keys, "type": "text"}, keys=keys)
        except ResponseTooLargeError:
            # KV limits one value to 25 MiB, not a bulk answer: ask for fewer
            # keys at a time, and read a value too large for an answer alone.
            if len(keys) == 1:
                value = self.get(keys[0])
                return {} if value is None else {keys[0]: value}
            half = len(keys) // 2
            return {**self._bulk_get(keys[:half]), **self._bulk_get(keys[half:])}
        _, result = _result(response, dict, "bulk read")
        values = result.get("values")
        if not isinstance(values, dict):
            raise _malformed(response, "bulk read (no 'values' object)")
        found = {}
        for key in keys:  # only what was asked: a server cannot add keys to the answer
            text = values.get(key)
            if text is None:
                continue
            if not isinstance(text, str):  # a JSON-typed answer from a lenient server
                text = json.dumps(text, separators=(",", ":"))
            found[key] = text.encode("utf-8")
        return found

    def list_keys(self, prefix: str | None = None, limit: int = 1000, cursor: str | None = None) -> KeyPage:
        """Return one KeyPage (up to ``limit`` keys, 10..1000); cursor None on the last page."""
        limits.validate_list_limit(limit)
        params: dict[str, Any] = {"limit": limit}
        if prefix:
            params["prefix"] = prefix
        if cursor:
            params["cursor"] = cursor
        response = self._call("GET", "/keys", "list", params=params, keys=(prefix,) if prefix else ())
        data, items = _result(response, (list, type(None)), "key listing")
        keys = [_key_info(item, response) for item in items or []]
        info = data.get("result_info")
        next_cursor = info.get("cursor") if isinstance(info, dict) else None
        if (info is not None and not isinstance(info, dict)) or not isinstance(next_cursor, (str, type(None))):
            raise _malformed(response, "key listing (result_info.cursor is not text)")
        # The last page carries cursor "" (or none at all). A server that sends
        # one back twice is caught by iter_pages(), the one loop over pages.
        return KeyPage(keys, next_cursor or None)

    # Writes

    def put(self, key: str, value: bytes | str, *, expiration: float | None = None,
            expiration_ttl: float | None = None, metadata: Any = None) -> None:
        """Write one value (raw body; multipart/form-data when metadata is given). One call."""
        path = f"/values/{encode_key(key)}"
        value = limits.validate_value(value)
        meta = limits.encode_metadata(metadata)
        limits.validate_expiry(expiration, expiration_ttl)
        params = _expiry_params(expiration, expiration_ttl)
        if meta is None:
            response = self._call("PUT", path, "put", params=params, data=value, keys=(key,),
                                  headers={"Content-Type": "application/octet-stream"})
        else:
            body, content_type = _form(value, meta)
            response = self._call("PUT", path, "put", params=params, data=body, keys=(key,),
                                  headers={"Content-Type": content_type})
        _envelope(response)  # a 200 without success: true is not an acknowledged write

    def put_many(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Write many items (dicts with ``key``, ``value`` and optional ``expiration``,
        ``expiration_ttl``, ``metadata``): one bulk call per 10,000 pairs or 100 MB.

        Raises KVBulkError naming every key that was not written.
        """
        batches = list(_bulk_batches([_bulk_item(item) for item in items]))
        self._bulk("PUT", "/bulk", "bulk_put", batches, [[i["key"] for i in b] for b in batches], "write")

    def delete(self, key: str) -> None:
        """Delete one key; deleting a missing key is not an error. One call."""
        response = self._call("DELETE", f"/values/{encode_key(key)}", "delete", missing_ok=True, keys=(key,))
        if response is not None:
            _envelope(response)  # a 200 without success: true did not delete

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete keys in one bulk call per 10,000; KVBulkError names any left behind."""
        keys = list(dict.fromkeys(keys))
        for key in keys:
            limits.validate_key(key)
        chunks = list(_chunks(keys, limits.BULK_DELETE_MAX_KEYS))
        self._bulk("POST", "/bulk/delete", "bulk_delete", chunks, chunks, "delete")

    def _bulk(self, method: str, path: str, endpoint: str, bodies: list[Any], keys_per_body: list[list[str]],
              action: str) -> None:
        """Send bulk bodies in turn; raise KVBulkError naming every key not done.

        A failed call (an error status, or a connection error after retries) ends
        the run: its keys (or those its answer names) and every later body's keys
        are reported, never dropped.
        """
        failed: list[str] = []
        for index, body in enumerate(bodies):
            try:
                response = self._call(method, path, endpoint, json=body, keys=keys_per_body[index])
                failed += _unsuccessful(response)  # a 200 that is not an envelope fails the body
            except KVError as exc:
                named = exc.result.get("unsuccessful_keys") if isinstance(exc.result, dict) else None
                if not (isinstance(named, list) and named and all(isinstance(k, str) for k in named)):
                    named = keys_per_body[index]
                failed += named
                failed += [k for later in keys_per_body[index + 1:] for k in later]
                raise KVBulkError(f"Bulk {action} failed for {len(failed)} keys: {exc.message}", keys=failed,
                                  status=exc.status, errors=exc.errors) from exc
        if failed:
            # The keys are on .keys, not in the text: they may be session ids, and error text gets logged.
            raise KVBulkError(f"Bulk {action} left {len(failed)} keys undone; retry them (see .keys).",
                              keys=failed, partial=True)

    # Namespaces

    def list_namespaces(self) -> list[dict[str, Any]]:
        """Return every namespace of the account as [{"id", "title", ...}]."""
        found: list[dict[str, Any]] = []
        page, per_page = 1, 100
        while True:
            response = self._call("GET", "", "namespaces", params={"page": page, "per_page": per_page},
                                  base=self._account_url)
            data, batch = _result(response, (list, type(None)), "namespace list")
            info = data.get("result_info")
            total = info.get("total_count") if isinstance(info, dict) else None
            if not all(isinstance(ns, dict) and isinstance(ns.get("id"), str) for ns in batch or []) \
                    or not isinstance(total, (int, type(None))) or isinstance(total, bool):
                raise _malformed(response, "namespace list")
            found += batch or []
            if not batch or len(found) >= (len(found) if total is None else total):
                return found
            if page * per_page >= limits.MAX_NAMESPACES:  # a server that never ends its pages
                raise _malformed(response, f"namespace list (more than the {limits.MAX_NAMESPACES} "
                                           "namespaces an account can have)")
            page += 1

    def create_namespace(self, title: str) -> dict[str, Any]:
        """Create a namespace; return it as {"id", "title"}. Not retried (not idempotent)."""
        response = self._call("POST", "", "namespaces", json={"title": title},
                              base=self._account_url, idempotent=False)
        _, result = _result(response, dict, "new namespace")
        if not isinstance(result.get("id"), str):
            raise _malformed(response, "new namespace (no id)")
        return result

    # Plumbing

    def _call(self, method: str, path: str, endpoint: str, *, missing_ok: bool = False, base: str | None = None,
              idempotent: bool = True, keys: Iterable[str] = (), **kwargs: Any) -> Any:
        """Send one call; return the Response, or None for a key miss when ``missing_ok``.

        ``keys`` are the keys the call names: a server that echoes one into an
        error message gets it replaced (a key may be a session id, and error
        text ends up in logs).
        """
        url = (base or self._url) + path
        if "json" in kwargs:  # compact, so bulk size limits are measured on what is sent
            kwargs["data"] = json.dumps(kwargs.pop("json"), separators=(",", ":"))
            kwargs["headers"] = {"Content-Type": "application/json"}
        response = self.transport.request(method, url, endpoint=endpoint, idempotent=idempotent, **kwargs)
        response.cfkv_keys = keys  # type: ignore[attr-defined]  # for _envelope's errors
        if response.status_code < 300:
            return response
        error = _error_for(response)
        if missing_ok and isinstance(error, KVNotFoundError) and KEY_NOT_FOUND in error.codes:
            return None
        raise error


def _envelope(response: requests.Response) -> dict[str, Any]:
    """Return the decoded JSON envelope, or raise KVAPIError if it is not one."""
    try:
        data = response.json()
    except ValueError:  # json's errors, and UnicodeDecodeError, are ValueErrors
        raise KVMalformedResponseError("Workers KV answered with something that is not JSON.",
                                       status=response.status_code, ray_id=response.headers.get("cf-ray")) from None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        raise _malformed(response, "envelope (no success field)")
    if data["success"] is not True:
        errors = _errors(data, response)
        raise KVAPIError(f"Workers KV reported failure: {_describe(errors)}",
                         status=response.status_code, errors=errors,
                         ray_id=response.headers.get("cf-ray"))
    return data


def _result(response: requests.Response, types: type | tuple[type, ...], what: str) -> tuple[dict[str, Any], Any]:
    """Return (envelope, result) if the result is one of ``types``; else raise KVAPIError."""
    data = _envelope(response)
    result = data.get("result")
    if not isinstance(result, types):
        raise _malformed(response, what)
    return data, result


def _malformed(response: requests.Response, what: str) -> KVMalformedResponseError:
    return KVMalformedResponseError(f"Workers KV answered with a malformed {what}. Check BASE_URL: it should be "
                      "Cloudflare's API or the django-cfkv gateway.",
                      status=response.status_code, ray_id=response.headers.get("cf-ray"))


def _key_info(item: Any, response: requests.Response) -> KeyInfo:
    """Return the KeyInfo of one listed key, or raise KVAPIError if it is not one."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise _malformed(response, "key listing (an item without a name)")
    expiration = item.get("expiration")
    if expiration is not None:
        expiration = _expiration(expiration, response)
    return KeyInfo(item["name"], expiration, item.get("metadata"))


def _expiration(value: Any, response: requests.Response) -> int | None:
    """Return an expiry (epoch seconds, from a number or a header's text) as int, or None."""
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise _malformed(response, "expiration")
    return int(number)


def _errors(body: Any, response: requests.Response) -> list[dict[str, Any]]:
    """Return the envelope's error items that are objects (a broken server may send anything),
    with any key the call named replaced in their messages."""
    errors = body.get("errors") if isinstance(body, dict) else None
    errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    keys = getattr(response, "cfkv_keys", ())
    if not keys or not any(isinstance(e.get("message"), str) for e in errors):
        return errors
    # A key shorter than 8 characters holds no secret, and replacing it would garble the message.
    forms = {form for key in keys if len(key) >= 8 for form in (
        key, repr(key)[1:-1], json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1])}
    scrubbed = []
    for error in errors:
        message = error.get("message")
        if isinstance(message, str):
            for form in forms:
                if form in message:
                    message = message.replace(form, "<key>")
            error = {**error, "message": message}
        scrubbed.append(error)
    return scrubbed


def _describe(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "no error details"
    text = "; ".join(f"code {e.get('code')}: {e.get('message')}" for e in errors)
    return text if len(text) <= 500 else text[:500] + "..."


def _error_for(response: requests.Response) -> KVError:
    """Map an error response to the one exception class that fits it."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = _errors(body, response)
    result = body.get("result") if isinstance(body, dict) else None
    kwargs: dict[str, Any] = {"status": status, "errors": errors, "ray_id": response.headers.get("cf-ray"),
                              "result": result}
    detail = _describe(errors)
    if status in (401, 403):
        return KVAuthError(_auth_advice(response.headers.get("WWW-Authenticate", ""), detail), **kwargs)
    if status == 404:
        if any(e.get("code") == KEY_NOT_FOUND for e in errors):
            return KVNotFoundError(f"Key not found ({detail}).", **kwargs)
        return KVNotFoundError(
            f"Workers KV found no such namespace or route ({detail}). Check ACCOUNT_ID, "
            "NAMESPACE_ID and BASE_URL.", **kwargs)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return KVRateLimitError(
            f"Cloudflare's rate limit was hit ({detail}): 1,200 API calls per 5 minutes per user, "
            "or one write per second to the same key"
            + (f"; retry after {retry_after:.0f} s." if retry_after is not None else "."),
            retry_after=retry_after, account_wide=account_block(response) > 0, **kwargs)
    if status >= 500:
        return KVAPIError(f"Workers KV failed with a server error ({detail}).", **kwargs)
    return KVAPIError(f"Workers KV refused the request ({detail}).", **kwargs)


def _auth_advice(challenge: str, detail: str) -> str:
    """Say which token to fix: the Worker gateway names itself in its challenge."""
    if 'realm="django-cfkv-gateway"' not in challenge:
        return (f"Cloudflare refused the API token ({detail}). Check API_TOKEN and that it has the "
                f"'{TOKEN_PERMISSION}' permission for this account.")
    if "insufficient_scope" in challenge:
        return (f"The django-cfkv gateway refused a write ({detail}): API_TOKEN is its read-only token. "
                "Writes need the value of the gateway's CFKV_GATEWAY_TOKEN secret.")
    return (f"The django-cfkv gateway refused the token ({detail}). Set API_TOKEN to the value of the "
            "gateway's CFKV_GATEWAY_TOKEN secret (or CFKV_GATEWAY_READ_TOKEN, for reads only).")


def _unsuccessful(response: requests.Response) -> list[str]:
    """Return the keys a bulk answer names as not done (2024's API answers no result at all)."""
    _, result = _result(response, (dict, type(None)), "bulk answer")
    named = (result or {}).get("unsuccessful_keys") or []
    if not isinstance(named, list) or not all(isinstance(k, str) for k in named):
        raise _malformed(response, "bulk answer (unsuccessful_keys is not a list of keys)")
    return named


def _form(value: bytes, metadata: str) -> tuple[bytes, str]:
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


def _bulk_item(item: Mapping[str, Any]) -> dict[str, Any]:
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


def _bulk_batches(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split bulk-write items into requests of <= 10,000 pairs and <= 100 MB."""
    batch: list[dict[str, Any]] = []
    size = 2
    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":"))) + 1
        if batch and (len(batch) >= limits.BULK_WRITE_MAX_ITEMS or size + item_size > limits.BULK_WRITE_MAX_BYTES):
            yield batch
            batch, size = [], 2
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def _chunks(seq: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]
