"""The handlers of a namespace's calls: values, metadata, listing and the bulk calls.

Each takes the :class:`~.wire.Call` the router made (the namespace's store, the key already checked)
and returns an answer, or raises :class:`~.wire.Reply`. Where Cloudflare's behaviour is uncertain they
follow Miniflare, Cloudflare's own local emulator.
"""

import base64
import binascii
from collections.abc import Callable
from typing import Any

from .. import clock, limits
from ..exceptions import KVValueError
from ..local import LocalKV
from .wire import Answer, Call, Reply, envelope, json_answer, json_body, multipart, refusal


def checked_key(key: str) -> str:
    """Validate a key as Cloudflare does, with Miniflare's statuses."""
    if key == "":
        raise Reply(400, 10042, "Key names must not be empty")
    if key in (".", ".."):
        raise Reply(400, 10042, f'Illegal key name "{key}". Please use a different name.')
    if len(key.encode("utf-8", "surrogatepass")) > limits.MAX_KEY_BYTES:
        raise Reply(414, 10030, f"key too long: keys are at most {limits.MAX_KEY_BYTES} bytes")
    return key


def _store(call: Call) -> LocalKV:
    assert call.store is not None, "the router gives every namespace call its store"
    return call.store


def _store_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a store write, answering its refusals as Cloudflare does (see :func:`~.wire.refusal`)."""
    try:
        return fn(*args, **kwargs)
    except KVValueError as exc:
        raise refusal(exc) from None


# Values


def get_value(call: Call) -> Answer:
    entry = _store(call).get_with_metadata(call.key)
    if entry is None:
        raise Reply(404, 10009, "get: 'key not found'")
    headers = {"Content-Type": "application/octet-stream"}
    if entry.expiration:
        headers["expiration"] = str(entry.expiration)
    return 200, headers, entry.value


def get_metadata(call: Call) -> Answer:
    entry = _store(call).get_with_metadata(call.key)
    if entry is None:
        raise Reply(404, 10009, "get: 'key not found'")
    return json_answer(envelope(entry.metadata))


def put_value(call: Call) -> Answer:
    expiration, ttl = _expiry_from(call)
    metadata = None
    if call.content_type.startswith("multipart/form-data"):
        parts = multipart(call.content_type, call.body)
        if "value" not in parts:
            raise Reply(400, 10012, "multipart put request does not contain required form field 'value'")
        value = parts["value"]
        if "metadata" in parts:
            metadata = _parse_metadata(parts["metadata"])
    else:
        value = call.body
    if len(value) > limits.MAX_VALUE_BYTES:
        raise Reply(413, 10024, "payload too large")
    _store_call(_store(call).put, call.key, value, expiration=expiration, expiration_ttl=ttl, metadata=metadata)
    return json_answer(envelope(None))


def delete_value(call: Call) -> Answer:
    _store(call).delete(call.key)
    return json_answer(envelope(None))


def _expiry_from(call: Call) -> tuple[float | None, float | None]:
    def number(name: str, code: int) -> float | None:
        raw = call.arg(name)
        if raw == "":
            return None
        try:
            return float(raw)
        except ValueError:
            raise Reply(400, code, f"Invalid {name} of {raw}.") from None

    ttl = number("expiration_ttl", 10034)
    expiration = number("expiration", 10033)
    if ttl is not None and ttl < limits.MIN_TTL:
        raise Reply(400, 10034, f"Invalid expiration_ttl of {_shown(ttl)}. Expiration TTL must be at least 60.")
    if ttl is None and expiration is not None and expiration < clock.now() + limits.MIN_TTL:
        raise Reply(400, 10033, f"Invalid expiration of {_shown(expiration)}. Expiration times must be at "
                                "least 60 seconds in the future.")
    return expiration, ttl


def _shown(number: float) -> float | int:
    return int(number) if float(number).is_integer() else number


def _parse_metadata(raw: bytes) -> Any:
    if len(raw) > limits.MAX_METADATA_BYTES:
        raise Reply(413, 10047, f"invalid metadata: metadata is at most {limits.MAX_METADATA_BYTES} bytes")
    try:
        return limits.loads_json(raw)
    except ValueError:
        raise Reply(400, 10047, "invalid metadata: not JSON") from None


# Listing


def list_keys(call: Call) -> Answer:
    try:
        limit = int(call.arg("limit", "1000"))
    except ValueError:
        raise Reply(400, 10028, "invalid limit argument") from None
    if not limits.LIST_MIN_LIMIT <= limit <= limits.LIST_MAX_LIMIT:
        raise Reply(400, 10028, "invalid limit argument")
    try:
        page = _store(call).list_keys(prefix=call.arg("prefix") or None, limit=limit,
                                      cursor=call.arg("cursor") or None)
    except KVValueError as exc:
        if exc.code != limits.INVALID_CURSOR:
            raise refusal(exc) from None
        raise Reply(400, limits.INVALID_CURSOR, 'invalid "list keys" cursor') from None
    items = []
    for info in page.keys:
        item: dict[str, Any] = {"name": info.name}
        if info.expiration is not None:
            item["expiration"] = info.expiration
        if info.metadata is not None:
            item["metadata"] = info.metadata
        items.append(item)
    return json_answer(envelope(items, result_info={"count": len(items), "cursor": page.cursor or ""}))


# Bulk calls


def bulk_write(call: Call) -> Answer:
    if len(call.body) > limits.BULK_WRITE_MAX_BYTES:
        raise Reply(413, 10024, "payload too large")
    items = json_body(call.body)
    if not isinstance(items, list):
        raise Reply(400, 10029, "invalid request: the body must be a JSON array of key-value pairs")
    if len(items) > limits.BULK_WRITE_MAX_ITEMS:
        raise Reply(400, 10029, f"invalid request: at most {limits.BULK_WRITE_MAX_ITEMS} pairs per bulk write")
    rows = [_bulk_row(item) for item in items]
    failed = call.unsuccessful(row["key"] for row in rows)
    rows = [row for row in rows if row["key"] not in failed]
    _store_call(_store(call).put_many, rows)
    return json_answer(envelope({"successful_key_count": len(rows), "unsuccessful_keys": sorted(failed)}))


def _bulk_row(item: object) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or "value" not in item:
        raise Reply(400, 10029, "invalid request: every item needs a string key and a value")
    checked_key(item["key"])
    value = item["value"]
    if not isinstance(value, str):
        raise Reply(400, 10012, "malformed value: bulk values are strings")
    if item.get("base64"):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Reply(400, 10012, "malformed value: invalid base64") from None
    return {"key": item["key"], "value": value, "expiration": item.get("expiration"),
            "expiration_ttl": item.get("expiration_ttl"), "metadata": item.get("metadata")}


def bulk_delete(call: Call) -> Answer:
    keys = json_body(call.body)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise Reply(400, 10029, "invalid request: the body must be a JSON array of key names")
    if len(keys) > limits.BULK_DELETE_MAX_KEYS:
        raise Reply(400, 10029, f"invalid request: at most {limits.BULK_DELETE_MAX_KEYS} keys per bulk delete")
    for key in keys:
        checked_key(key)
    failed = call.unsuccessful(keys)
    keys = [k for k in keys if k not in failed]
    _store(call).delete_many(keys)
    return json_answer(envelope({"successful_key_count": len(keys), "unsuccessful_keys": sorted(failed)}))


def bulk_get(call: Call) -> Answer:
    request = json_body(call.body)
    if not isinstance(request, dict) or not isinstance(request.get("keys"), list):
        raise Reply(400, 10029, 'invalid request: expected {"keys": [...]}')
    keys, kind = request["keys"], request.get("type", "text")
    with_metadata = bool(request.get("withMetadata", False))
    if len(keys) > limits.BULK_GET_MAX_KEYS:
        raise Reply(400, 10029, f"invalid request: at most {limits.BULK_GET_MAX_KEYS} keys per bulk get")
    if kind not in ("text", "json"):
        raise Reply(400, 10029, "invalid request: type must be 'text' or 'json'")
    values = {}
    for key in keys:
        if not isinstance(key, str):
            raise Reply(400, 10029, "invalid request: keys must be strings")
        values[key] = _bulk_value(_store(call), key, kind, with_metadata)
    return json_answer(envelope({"values": values}))


def _bulk_value(store: LocalKV, key: str, kind: str, with_metadata: bool) -> Any:
    entry = store.get_with_metadata(checked_key(key))
    if entry is None:
        return None
    try:
        value: Any = entry.value.decode("utf-8")
        if kind == "json":
            value = limits.loads_json(value)
    except (UnicodeDecodeError, ValueError):
        raise Reply(400, 10012, f"malformed value: {key!r} is not {kind}") from None
    if not with_metadata:
        return value
    found = {"value": value, "metadata": entry.metadata}
    if entry.expiration:
        found["expiration"] = entry.expiration
    return found
