"""What an answer holds: the JSON envelope, each call's result checked for its shape, and the
error items a failure carries (with any key the call named replaced).

No I/O: every function reads an :class:`Answer` (a requests response, or the one the async driver makes)
and returns a result or raises a KVError. An answer of the wrong shape is a
KVMalformedResponseError (a KVAPIError), never an AttributeError or KeyError that
would escape IGNORE_EXCEPTIONS and the session engines' fail-open paths.
"""

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .. import limits
from ..exceptions import KVAPIError, KVMalformedResponseError
from ..text import one_line
from ..types import KeyInfo, KeyPage
from .request import NAMESPACES_PER_PAGE, KVRequest


class Answer(Protocol):
    """The parts of an HTTP response read here: a requests response has them, and so has the async driver's."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive

    @property
    def content(self) -> bytes: ...


def decoded(response: Answer) -> Any:
    """Return the answer's JSON, or raise ValueError (see :func:`~django_cfkv.limits.loads_json`).

    Cloudflare answers in UTF-8, and that is all that is read, by the blocking and the async client alike
    (requests' own json() would guess UTF-16 or 32 and skip a byte-order mark, where aiohttp's answer would not).
    """
    return limits.loads_json(response.content.decode())


def envelope(response: Answer, call: KVRequest) -> dict[str, Any]:
    """Return the decoded JSON envelope, or raise KVAPIError if it is not one or says ``success: false``."""
    try:
        data = decoded(response)
    except ValueError:
        raise KVMalformedResponseError("Workers KV answered with something that is not JSON.",
                                       status=response.status_code, ray_id=response.headers.get("cf-ray")) from None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        raise malformed(response, "envelope (no success field)")
    if data["success"] is not True:
        errors = error_items(data, call.keys)
        raise KVAPIError(f"Workers KV reported failure: {describe(errors)}",
                         status=response.status_code, errors=errors,
                         ray_id=response.headers.get("cf-ray"))
    return data


def result(response: Answer, call: KVRequest, types: type | tuple[type, ...], what: str) -> tuple[dict[str, Any], Any]:
    """Return (envelope, result) if the result is one of ``types``; else raise KVAPIError."""
    data = envelope(response, call)
    found = data.get("result")
    if not isinstance(found, types):
        raise malformed(response, what)
    return data, found


def malformed(response: Answer, what: str) -> KVMalformedResponseError:
    return KVMalformedResponseError(f"Workers KV answered with a malformed {what}. Check BASE_URL: it should be "
                                    "Cloudflare's API or the django-cfkv gateway.",
                                    status=response.status_code, ray_id=response.headers.get("cf-ray"))


def error_items(body: Any, keys: Iterable[str]) -> list[dict[str, Any]]:
    """Return the envelope's error items that are objects (a broken server may send anything),
    with any of ``keys`` replaced by <key> in their messages (a key may be a session id, and
    error text ends up in logs)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
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


def describe(errors: list[dict[str, Any]]) -> str:
    """Return error items as one line of text, at most about 500 characters."""
    if not errors:
        return "no error details"
    text = one_line("; ".join(f"code {e.get('code')}: {e.get('message')}" for e in errors))  # the server's words
    return text if len(text) <= 500 else text[:500] + "..."


def expiration(value: Any, response: Answer) -> int | None:
    """Return an expiry (epoch seconds, from a number or a header's text) as int, or None."""
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past a float's range
        number = math.nan
    if not math.isfinite(number):
        raise malformed(response, "expiration")
    return int(number)


# Each call's result

def value_expiration(response: Answer) -> int | None:
    """Return the expiry a value read states in its ``expiration`` header, or None."""
    return expiration(response.headers.get("expiration"), response)


def metadata(response: Answer, call: KVRequest) -> Any:
    """Return the metadata of a metadata read (None when the key has none)."""
    return envelope(response, call).get("result")


def bulk_values(response: Answer, call: KVRequest) -> dict[str, bytes]:
    """Return {key: bytes} of a bulk read, for the keys asked only: a server cannot add keys to the answer."""
    _, found = result(response, call, dict, "bulk read")
    values = found.get("values")
    if not isinstance(values, dict):
        raise malformed(response, "bulk read (no 'values' object)")
    out = {}
    for key in call.keys:
        text = values.get(key)
        if text is None:
            continue
        if not isinstance(text, str):  # a JSON-typed answer from a lenient server
            text = json.dumps(text, separators=(",", ":"))
        out[key] = text.encode("utf-8")
    return out


def key_page(response: Answer, call: KVRequest) -> KeyPage:
    """Return one page of a key listing; its cursor is None on the last page."""
    data, items = result(response, call, (list, type(None)), "key listing")
    keys = [_key_info(item, response) for item in items or []]
    info = data.get("result_info")
    next_cursor = info.get("cursor") if isinstance(info, dict) else None
    if (info is not None and not isinstance(info, dict)) or not isinstance(next_cursor, (str, type(None))):
        raise malformed(response, "key listing (result_info.cursor is not text)")
    # The last page carries cursor "" (or none at all). A server that sends
    # one back twice is caught by types.PageWalk, which every loop over pages uses.
    return KeyPage(keys, next_cursor or None)


def _key_info(item: Any, response: Answer) -> KeyInfo:
    """Return the KeyInfo of one listed key, or raise KVAPIError if it is not one."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise malformed(response, "key listing (an item without a name)")
    found = item.get("expiration")
    if found is not None:
        found = expiration(found, response)
    return KeyInfo(item["name"], found, item.get("metadata"))


def unsuccessful(response: Answer, call: KVRequest) -> list[str]:
    """Return the keys a bulk answer names as not done (2024's API answers no result at all)."""
    _, found = result(response, call, (dict, type(None)), "bulk answer")
    named = (found or {}).get("unsuccessful_keys") or []
    if not isinstance(named, list) or not all(isinstance(k, str) for k in named):
        raise malformed(response, "bulk answer (unsuccessful_keys is not a list of keys)")
    return named


def namespace_page(response: Answer, call: KVRequest, page: int, seen: int) -> tuple[list[dict[str, Any]], bool]:
    """Return (namespaces on page ``page``, whether to ask for the next) after ``seen`` on earlier pages."""
    data, batch = result(response, call, (list, type(None)), "namespace list")
    info = data.get("result_info")
    total = info.get("total_count") if isinstance(info, dict) else None
    if not all(isinstance(ns, dict) and isinstance(ns.get("id"), str) for ns in batch or []) \
            or not isinstance(total, (int, type(None))) or isinstance(total, bool):
        raise malformed(response, "namespace list")
    batch = batch or []
    more = bool(batch) and total is not None and seen + len(batch) < total
    if more and page * NAMESPACES_PER_PAGE >= limits.MAX_NAMESPACES:  # a server that never ends its pages
        raise malformed(response, f"namespace list (more than the {limits.MAX_NAMESPACES} "
                                  "namespaces an account can have)")
    return batch, more


def new_namespace(response: Answer, call: KVRequest) -> dict[str, Any]:
    """Return a created namespace as {"id", "title", ...}."""
    _, found = result(response, call, dict, "new namespace")
    if not isinstance(found.get("id"), str):
        raise malformed(response, "new namespace (no id)")
    return found
