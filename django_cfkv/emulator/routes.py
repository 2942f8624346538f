"""Which handler answers a method and a path, under which stats name, and how large a body it takes.

A key is one path segment, percent-encoded with nothing left safe, as Cloudflare routes it: a path
such as ``/values/a/b`` reaches no route (404, code 7003), so a client that leaves ``/`` unencoded is
told so rather than served another key.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from .. import limits
from . import handlers, namespaces
from .wire import Answer, Call, Reply

_PATH = re.compile(
    r"^/client/v4/accounts/(?P<account>[^/]+)/storage/kv/namespaces"
    r"(?:/(?P<ns>[^/]+)(?P<rest>/.*)?)?$"
)
MAX_NAMESPACE_ID = 32
# The largest body each call takes (a longer one is refused before it is read). A value may come
# as a multipart form: room for its boundaries, part headers and metadata (as the gateway allows).
SMALL_BODY = 1024 * 1024  # a bulk get's 100 keys, a title, fault settings
VALUE_BODY = limits.MAX_VALUE_BYTES + 64 * 1024
BULK_BODY = limits.BULK_WRITE_MAX_BYTES


@dataclass(frozen=True)
class Route:
    """Where one call goes. ``endpoint``: the name it is counted under in the emulator's stats (None:
    not counted). ``records``: a namespace call, working on the records of all namespaces."""

    handler: Callable[[Call], Answer]
    endpoint: str | None = None
    namespace: str | None = None
    key: str = ""
    body_limit: int = SMALL_BODY
    records: bool = False


def no_route() -> Reply:
    return Reply(404, 7003, "No route for the URI")


# (method, path after the namespace id) -> (stats name, handler, largest body)
_NAMESPACE_CALLS: dict[tuple[str, str], tuple[str, Callable[[Call], Answer], int]] = {
    ("GET", "/keys"): ("list", handlers.list_keys, SMALL_BODY),
    ("PUT", "/bulk"): ("bulk_put", handlers.bulk_write, BULK_BODY),
    ("POST", "/bulk/delete"): ("bulk_delete", handlers.bulk_delete, BULK_BODY),
    ("DELETE", "/bulk"): ("bulk_delete", handlers.bulk_delete, BULK_BODY),  # the deprecated form
    ("POST", "/bulk/get"): ("bulk_get", handlers.bulk_get, SMALL_BODY),
}
_VALUE_CALLS: dict[str, tuple[str, Callable[[Call], Answer], int]] = {
    "GET": ("get", handlers.get_value, SMALL_BODY),
    "PUT": ("put", handlers.put_value, VALUE_BODY),
    "DELETE": ("delete", handlers.delete_value, SMALL_BODY),
}
_ONE_NAMESPACE: dict[str, Callable[[Call], Answer]] = {
    "GET": namespaces.get_namespace, "PUT": namespaces.rename_namespace, "DELETE": namespaces.delete_namespace,
}


def match(method: str, path: str) -> Route:
    """Return the route of a call (``path`` without its query), or raise the API's refusal of it."""
    found = _PATH.match(path)
    if not found:
        raise no_route()
    ns, rest = found.group("ns"), found.group("rest") or ""
    if ns is None or rest == "":
        return _namespace_route(method, ns and unquote(ns))
    ns = unquote(ns)
    if len(ns) > MAX_NAMESPACE_ID:
        raise Reply(404, 10013, "namespace not found")
    if rest.startswith("/values/"):
        key = _key(rest[len("/values/"):])
        if method not in _VALUE_CALLS:
            raise no_route()
        endpoint, handler, limit = _VALUE_CALLS[method]
        return Route(handler, endpoint, ns, key, limit)
    if rest.startswith("/metadata/") and method == "GET":
        return Route(handlers.get_metadata, "get_metadata", ns, _key(rest[len("/metadata/"):]))
    if (method, rest) not in _NAMESPACE_CALLS:
        raise no_route()
    endpoint, handler, limit = _NAMESPACE_CALLS[method, rest]
    return Route(handler, endpoint, ns, body_limit=limit)


def _namespace_route(method: str, ns: str | None) -> Route:
    """The namespace collection (``ns`` None) or one namespace."""
    if ns is None:
        if method == "GET":
            return Route(namespaces.list_namespaces, records=True)
        if method == "POST":
            return Route(namespaces.create_namespace, records=True)
        raise Reply(405, 10000, "Method not allowed")
    if len(ns) > MAX_NAMESPACE_ID:
        raise Reply(404, 10013, "namespace not found")
    if method not in _ONE_NAMESPACE:
        raise no_route()
    return Route(_ONE_NAMESPACE[method], namespace=ns, records=True)


def _key(raw: str) -> str:
    """The key of a value or metadata path: one percent-encoded segment."""
    if "/" in raw:  # Cloudflare routes the key as one segment: "a/b" must come as "a%2Fb"
        raise no_route()
    try:
        key = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise Reply(400, 10042, "Key names must be valid UTF-8") from None
    return handlers.checked_key(key)
