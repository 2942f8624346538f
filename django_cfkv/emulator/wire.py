"""The API's wire format: requests as the handlers see them, envelopes, error answers and codes, bodies.

It follows Cloudflare's documented wire format (shared reference, sections 1-5): raw bytes for value
reads, the JSON envelope everywhere else, and Cloudflare's statuses and error codes.
"""

import email.parser
import email.policy
import email.utils
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING, Any

from .. import limits
from ..exceptions import KVValueError

if TYPE_CHECKING:
    from ..local import LocalKV, LocalNamespaces

#: (status, headers, body) of one answer.
Answer = tuple[int, dict[str, str], bytes]

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 414: "URI Too Long",
           429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}


class Reply(Exception):
    """Raised while answering a call to answer at once with an error envelope."""

    def __init__(self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})


def no_route() -> Reply:
    return Reply(404, 7003, "No route for the URI")


@dataclass
class Call:
    """One API call, as a handler sees it: its store (or the namespace records), namespace and key, the query
    and the body."""

    method: str
    query: dict[str, list[str]]
    body: bytes = b""
    content_type: str = ""
    store: "LocalKV | None" = None  # the namespace's entries (a call on keys or values)
    records: "LocalNamespaces | None" = None  # the namespace records (a namespace call)
    namespace: str | None = None
    key: str = ""
    # The keys a bulk call reports as not done (an injected fault); none by default.
    unsuccessful: Callable[[Iterable[str]], set[str]] = field(default=lambda keys: set(), repr=False)

    def arg(self, name: str, default: str = "") -> str:
        """Return the first value of a query argument, or ``default``."""
        return self.query.get(name, [default])[0]


def envelope(result: Any = None, **extra: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


def json_answer(data: Any, status: int = 200) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def error_answer(reply: Reply, headers: Mapping[str, str] | None = None) -> Answer:
    """Return the error envelope answering ``reply``, with ``headers`` (the Ratelimit ones) and its own."""
    data = {"success": False, "errors": [{"code": reply.code, "message": reply.message}], "messages": [],
            "result": None}
    return reply.status, {**(headers or {}), **reply.headers, "Content-Type": "application/json"}, \
        json.dumps(data).encode()


def read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    """Return the request body; refuse one over ``limit`` bytes (413) before reading any of it.

    A body sent without a length (chunked) is read up to the limit and no further: the server
    says it ends by itself with ``wsgi.input_terminated``.
    """
    stream, declared = environ["wsgi.input"], environ.get("CONTENT_LENGTH") or ""
    try:
        if declared:
            length = int(declared)
            if length > limit:
                raise Reply(413, limits.PAYLOAD_TOO_LARGE, "payload too large")
            return stream.read(length) if length > 0 else b""
        if environ.get("wsgi.input_terminated"):
            body: bytes = stream.read(limit + 1)
            if len(body) > limit:
                raise Reply(413, limits.PAYLOAD_TOO_LARGE, "payload too large")
            return body
    except ValueError as exc:  # a length that is no number, or chunks that do not add up
        raise Reply(400, limits.INVALID_REQUEST, f"invalid request: malformed body ({exc})") from None
    return b""


def json_body(body: bytes) -> Any:
    try:
        return limits.loads_json(body or b"null")
    except ValueError:
        raise Reply(400, limits.INVALID_REQUEST, "invalid request: the body is not JSON") from None


def multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """Return the parts of a multipart/form-data body by name.

    With the email package's original policy (compat32), not its HTTP policy, which builds an object per
    header and took ten times as long (0.8 ms a write with metadata, most of the emulator's time for one).
    The forms of requests, httpx (the official SDK), aiohttp, curl and undici (wrangler) read the same under
    both; a name in RFC 2231's form (``name*=utf-8''value``) is decoded here, as the HTTP policy did."""
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise Reply(400, limits.INVALID_REQUEST, "invalid request: malformed multipart body")
    parts = {}
    for part in message.get_payload():  # a multipart message's payload is its list of parts
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, tuple):  # (charset, language, text): RFC 2231
            name = email.utils.collapse_rfc2231_value(name)
        if name and isinstance(name, str):
            payload = part.get_payload(decode=True)
            parts[name] = payload if isinstance(payload, bytes) else b""
    return parts


def refusal(exc: KVValueError) -> Reply:
    """Return Cloudflare's answer to a write the store refused with ``exc``: from the error's ``code`` and
    ``too_large``, never from its text."""
    code, text = exc.code or limits.INVALID_REQUEST, str(exc)
    message = {limits.INVALID_METADATA: f"invalid metadata: {text}", limits.PAYLOAD_TOO_LARGE: "payload too large",
               limits.INVALID_EXPIRATION: text, limits.INVALID_EXPIRATION_TTL: text}.get(code)
    return Reply(413 if exc.too_large else 400, code, message or f"invalid request: {text}")


_KEY_IN_PATH = re.compile(r"(/(?:values|metadata)/)[^\s?\"']+")
_QUERY_VALUE = re.compile(r"([?&][^=&\s\"']*=)[^&\s\"']*")


def redact(text: str) -> str:
    """Return ``text`` with each key in a KV path and each query value replaced.

    A key may be a session id; list prefixes and cursors (which encode a key)
    can be too. Account and namespace ids and the endpoint stay readable.
    """
    text = _KEY_IN_PATH.sub(r"\1<key>", text)
    return _QUERY_VALUE.sub(r"\1*", text)
