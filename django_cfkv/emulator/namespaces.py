"""The handlers of the namespace calls: list, create, get, rename and delete.

Any id is a namespace, created or not: the records (in the store's file) only give titles to the
ids that were created or renamed.
"""

import uuid
from typing import Any

from .. import limits
from ..local import LocalNamespaces
from .wire import Answer, Call, Reply, envelope, json_answer, json_body

MAX_PER_PAGE = 1000


def _records(call: Call) -> LocalNamespaces:
    assert call.records is not None, "the router gives every namespace call the records"
    return call.records


def _namespace_id(call: Call) -> str:
    assert call.namespace is not None, "the router gives every call on one namespace its id"
    return call.namespace


def describe(namespace_id: str, title: str) -> dict[str, Any]:
    return {"id": namespace_id, "title": title, "supports_url_encoding": True}


def list_namespaces(call: Call) -> Answer:
    page = _page_argument(call, "page", 1, None, 10007)
    per_page = _page_argument(call, "per_page", 20, MAX_PER_PAGE, 10008)
    order = call.arg("order", "id")
    if order not in ("id", "title"):
        raise Reply(400, 10043, "invalid order: use id or title")
    direction = call.arg("direction", "asc")
    if direction not in ("asc", "desc"):
        raise Reply(400, 10044, "invalid direction: use asc or desc")
    found = sorted(_records(call).list_namespaces(), key=lambda n: n[order], reverse=direction == "desc")
    chunk = [describe(n["id"], n["title"]) for n in found[(page - 1) * per_page: page * per_page]]
    info = {"count": len(chunk), "page": page, "per_page": per_page, "total_count": len(found)}
    return json_answer(envelope(chunk, result_info=info))


def create_namespace(call: Call) -> Answer:
    title = _title_from(call.body)
    namespace_id = uuid.uuid4().hex
    if not _records(call).create_namespace(namespace_id, title):
        raise Reply(400, 10014, "namespace already exists")
    return json_answer(envelope(describe(namespace_id, title)))


def get_namespace(call: Call) -> Answer:
    namespace_id = _namespace_id(call)
    titles = {item["id"]: item["title"] for item in _records(call).list_namespaces()}
    return json_answer(envelope(describe(namespace_id, titles.get(namespace_id, namespace_id))))


def rename_namespace(call: Call) -> Answer:
    namespace_id, title = _namespace_id(call), _title_from(call.body)
    if not _records(call).rename_namespace(namespace_id, title):
        raise Reply(400, 10014, "namespace already exists: another namespace has this title")
    return json_answer(envelope(describe(namespace_id, title)))


def delete_namespace(call: Call) -> Answer:
    _records(call).delete_namespace(_namespace_id(call))
    return json_answer(envelope(None))


def _title_from(body: bytes) -> str:
    """The title of a create or rename body, as the API checks it."""
    request = json_body(body)
    title = request.get("title") if isinstance(request, dict) else None
    if not isinstance(title, str) or not title:
        raise Reply(400, 10019, "missing title")
    if len(title) > limits.MAX_NAMESPACE_TITLE:
        raise Reply(400, 10029, f"invalid request: a title is at most {limits.MAX_NAMESPACE_TITLE} characters")
    return title


def _page_argument(call: Call, name: str, default: int, maximum: int | None, code: int) -> int:
    """A whole number >= 1 (and <= ``maximum``) from the query; ``default`` when absent."""
    raw = call.arg(name)
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value.is_integer() or value < 1 or (maximum is not None and value > maximum):
        raise Reply(400, code, f"malformed {name} argument: {raw[:32]}")
    return int(value)
