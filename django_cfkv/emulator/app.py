"""The emulator as a WSGI application.

It follows Cloudflare's documented wire format (shared reference, sections 1-5):
raw bytes for value reads, the JSON envelope everywhere else, and Cloudflare's
statuses and error codes. Where Cloudflare's behaviour is uncertain it follows
Miniflare, Cloudflare's own local emulator.
"""

import base64
import binascii
import email.parser
import email.policy
import hmac
import json
import logging
import random
import re
import threading
import time
import uuid
from urllib.parse import parse_qs, unquote

from .. import clock, limits
from ..exceptions import KVValueError
from ..local import LocalKV, LocalNamespaces

API_PREFIX = "/client/v4"
logger = logging.getLogger("django_cfkv.emulator")
_ROUTE = re.compile(
    r"^/client/v4/accounts/(?P<account>[^/]+)/storage/kv/namespaces"
    r"(?:/(?P<ns>[^/]+)(?P<rest>/.*)?)?$"
)
QUOTA_CALLS = 1200
QUOTA_WINDOW = 300


class _Reply(Exception):
    """Raised inside a handler to answer at once with an error envelope."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _envelope(result=None, **extra):
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


_KEY_IN_PATH = re.compile(r"(/(?:values|metadata)/)[^\s?\"']+")
_QUERY_VALUE = re.compile(r"([?&][^=&\s\"']*=)[^&\s\"']*")


def redact(text):
    """Return ``text`` with each key in a KV path and each query value replaced.

    A key may be a session id; list prefixes and cursors (which encode a key)
    can be too. Account and namespace ids and the endpoint stay readable.
    """
    text = _KEY_IN_PATH.sub(r"\1<key>", text)
    return _QUERY_VALUE.sub(r"\1*", text)


class Faults:
    """Fault injection: shares of 429/503 answers, slow answers, partial bulk failures.

    ``latency_ms`` models the network rather than a fault: ``reset()`` turns
    every fault off and puts it back to its start-up value.
    """

    FIELDS = {"rate_429": 0.0, "retry_after": 1, "rate_503": 0.0, "slow_rate": 0.0, "slow_ms": 0,
              "latency_ms": 0, "bulk_unsuccessful": 0.0}

    def __init__(self, **values):
        self._lock = threading.Lock()
        self.values = dict(self.FIELDS)
        self.update(values)
        self._start_latency = self.values["latency_ms"]

    def update(self, values):
        unknown = set(values) - set(self.FIELDS)
        if unknown:
            raise ValueError(f"Unknown fault settings: {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in values.items():
                self.values[name] = type(self.FIELDS[name])(value)

    def reset(self):
        """Turn every fault off; the latency goes back to its start-up value."""
        with self._lock:
            self.values = {**self.FIELDS, "latency_ms": self._start_latency}

    def __getitem__(self, name):
        return self.values[name]


class EmulatorApp:
    """WSGI app serving the KV REST API; each namespace id is its own namespace."""

    def __init__(self, path, *, token=None, enforce_quota=False, **faults):
        self.path = str(path)
        self.token = token
        self.enforce_quota = enforce_quota
        self.faults = Faults(**faults)
        self.stats = {}
        self._stats_lock = threading.Lock()
        self._window = (0.0, 0)  # (start, calls) of the simulated 5-minute quota

    def reset_quota(self):
        """Start a fresh simulated 5-minute API window."""
        with self._stats_lock:
            self._window = (0.0, 0)

    def store(self, namespace_id):
        """Return the LocalKV of ``namespace_id``.

        Made per call and never kept: any id is a namespace, so a cache of
        them would grow with every id a client ever sent.
        """
        return LocalKV(self.path, namespace=namespace_id)

    # WSGI

    def __call__(self, environ, start_response):
        status, headers, body = self.handle(environ)
        start_response(f"{status} {REASONS.get(status, 'Status')}", list(headers.items()))
        return [body]

    def handle(self, environ):
        """Return (status, headers, body bytes) for one request."""
        path = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
        path = path.split("?", 1)[0]
        method = environ["REQUEST_METHOD"]
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {"Ratelimit": ""}
        try:
            if path.startswith("/__emulator/"):
                self._check_token(environ)
                result = self._admin(method, path, body)
                return 200, {"Content-Type": "application/json"}, json.dumps(_envelope(result)).encode()
            headers = self._quota()
            self._check_token(environ)
            self._inject_faults()
            status, extra, payload = self._route(method, path, query, body, environ)
            headers.update(extra)
            return status, headers, payload
        except _Reply as reply:
            return self._error(headers, reply)
        except Exception:  # a bug or a locked database: answer as Cloudflare would, not by hanging up
            logger.exception("The emulator failed on %s %s", method, redact(path))
            return self._error(headers, _Reply(500, 10001, "service temporarily unavailable"))

    @staticmethod
    def _error(headers, reply):
        headers = {**headers, **reply.headers, "Content-Type": "application/json"}
        data = {"success": False, "errors": [{"code": reply.code, "message": reply.message}],
                "messages": [], "result": None}
        return reply.status, headers, json.dumps(data).encode()

    def _quota(self):
        now = clock.now()
        with self._stats_lock:
            start, used = self._window
            if now - start >= QUOTA_WINDOW:
                start, used = now, 0
            used += 1
            self._window = (start, used)
        remaining = max(0, QUOTA_CALLS - used)
        reset = int(QUOTA_WINDOW - (now - start))
        headers = {"Ratelimit": f'"default";r={remaining};t={reset}',
                   "Ratelimit-Policy": f'"default";q={QUOTA_CALLS};w={QUOTA_WINDOW}'}
        if self.enforce_quota and used > QUOTA_CALLS:
            raise _Reply(429, 10022, "too many requests", {**headers, "Retry-After": str(reset)})
        return headers

    def _check_token(self, environ):
        if self.token is None:
            return
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not auth.startswith("Bearer "):
            raise _Reply(401, 10000, "Authentication error")
        if not hmac.compare_digest(auth[7:].encode(), self.token.encode()):
            raise _Reply(403, 10000, "Authentication error")

    def _inject_faults(self):
        f = self.faults
        # Real time, not the package's clock: this is the network a client waits for.
        if f["latency_ms"]:
            time.sleep(f["latency_ms"] / 1000)
        if f["slow_rate"] and random.random() < f["slow_rate"]:
            time.sleep(f["slow_ms"] / 1000)
        if f["rate_429"] and random.random() < f["rate_429"]:
            extra = {"Retry-After": str(f["retry_after"])} if f["retry_after"] >= 0 else {}
            raise _Reply(429, 10022, "too many requests", extra)
        if f["rate_503"] and random.random() < f["rate_503"]:
            raise _Reply(503, 10001, "service temporarily unavailable")

    def _admin(self, method, path, body):
        if path == "/__emulator/faults":
            if method in ("POST", "PUT"):
                try:
                    self.faults.update(json.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    raise _Reply(400, 10029, str(exc))
            elif method == "DELETE":
                self.faults.reset()
            return self.faults.values
        if path == "/__emulator/stats" and method == "GET":
            with self._stats_lock:
                return dict(self.stats)
        if path == "/__emulator/stats" and method == "DELETE":
            with self._stats_lock:
                self.stats.clear()
            return {}
        raise _Reply(404, 7003, "No route for the URI")

    def _count(self, endpoint):
        with self._stats_lock:
            self.stats[endpoint] = self.stats.get(endpoint, 0) + 1

    # Routing

    def _route(self, method, path, query, body, environ):
        match = _ROUTE.match(path)
        if not match:
            raise _Reply(404, 7003, "No route for the URI")
        ns, rest = match.group("ns"), match.group("rest") or ""
        if ns is None or rest == "":
            return self._json(self._route_namespaces(method, ns and unquote(ns), query, body))
        ns = unquote(ns)
        if len(ns) > 32:
            raise _Reply(404, 10013, "namespace not found")
        store = self.store(ns)
        if rest.startswith("/values/"):
            return self._route_value(method, store, self._key(rest[len("/values/"):]), query, body, environ)
        if rest.startswith("/metadata/") and method == "GET":
            key = self._key(rest[len("/metadata/"):])
            self._count("get_metadata")
            entry = store.get_with_metadata(key)
            if entry is None:
                raise _Reply(404, 10009, "get: 'key not found'")
            return self._json(_envelope(entry.metadata))
        if rest == "/keys" and method == "GET":
            return self._json(self._list_keys(store, query))
        if rest == "/bulk" and method == "PUT":
            return self._json(self._bulk_write(store, body))
        if (rest == "/bulk/delete" and method == "POST") or (rest == "/bulk" and method == "DELETE"):
            return self._json(self._bulk_delete(store, body))
        if rest == "/bulk/get" and method == "POST":
            return self._json(self._bulk_get(store, body))
        raise _Reply(404, 7003, "No route for the URI")

    def _route_namespaces(self, method, ns, query, body):
        """The namespace collection (``ns`` None) or one namespace."""
        if ns is None:
            if method == "GET":
                return self._list_namespaces(query)
            if method == "POST":
                return self._create_namespace(body)
            raise _Reply(405, 10000, "Method not allowed")
        if len(ns) > 32:
            raise _Reply(404, 10013, "namespace not found")
        if method == "GET":
            return _envelope(_namespace(ns, self._title_of(ns)))
        if method == "PUT":
            return self._rename_namespace(ns, body)
        if method == "DELETE":
            LocalNamespaces(self.path).delete_namespace(ns)
            return _envelope(None)
        raise _Reply(404, 7003, "No route for the URI")

    def _route_value(self, method, store, key, query, body, environ):
        if method == "GET":
            return self._get_value(store, key)
        if method == "PUT":
            return self._json(self._put_value(store, key, query, body, environ))
        if method == "DELETE":
            self._count("delete")
            store.delete(key)
            return self._json(_envelope(None))
        raise _Reply(404, 7003, "No route for the URI")

    @staticmethod
    def _json(data, status=200):
        return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

    @staticmethod
    def _key(raw):
        try:
            key = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise _Reply(400, 10042, "Key names must be valid UTF-8") from None
        return _checked_key(key)

    # Handlers

    def _get_value(self, store, key):
        self._count("get")
        entry = store.get_with_metadata(key)
        if entry is None:
            raise _Reply(404, 10009, "get: 'key not found'")
        headers = {"Content-Type": "application/octet-stream"}
        if entry.expiration:
            headers["expiration"] = str(entry.expiration)
        return 200, headers, entry.value

    def _put_value(self, store, key, query, body, environ):
        self._count("put")
        expiration, ttl = _expiry_from(query)
        ctype = environ.get("CONTENT_TYPE", "")
        metadata = None
        if ctype.startswith("multipart/form-data"):
            parts = _multipart(ctype, body)
            if "value" not in parts:
                raise _Reply(400, 10012, "multipart put request does not contain required form field 'value'")
            value = parts["value"]
            if "metadata" in parts:
                metadata = _parse_metadata(parts["metadata"])
        else:
            value = body
        if len(value) > limits.MAX_VALUE_BYTES:
            raise _Reply(413, 10024, "payload too large")
        _store_call(store.put, key, value, expiration=expiration, expiration_ttl=ttl, metadata=metadata)
        return _envelope(None)

    def _list_keys(self, store, query):
        self._count("list")
        try:
            limit = int(query.get("limit", ["1000"])[0])
        except ValueError:
            raise _Reply(400, 10028, "invalid limit argument") from None
        if not limits.LIST_MIN_LIMIT <= limit <= limits.LIST_MAX_LIMIT:
            raise _Reply(400, 10028, "invalid limit argument")
        prefix = query.get("prefix", [""])[0] or None
        cursor = query.get("cursor", [""])[0] or None
        try:
            page = store.list_keys(prefix=prefix, limit=limit, cursor=cursor)
        except KVValueError as exc:
            if exc.code != limits.INVALID_CURSOR:
                raise _refusal(exc) from None
            raise _Reply(400, limits.INVALID_CURSOR, 'invalid "list keys" cursor') from None
        items = []
        for info in page.keys:
            item = {"name": info.name}
            if info.expiration is not None:
                item["expiration"] = info.expiration
            if info.metadata is not None:
                item["metadata"] = info.metadata
            items.append(item)
        return _envelope(items, result_info={"count": len(items), "cursor": page.cursor or ""})

    def _bulk_write(self, store, body):
        self._count("bulk_put")
        if len(body) > limits.BULK_WRITE_MAX_BYTES:
            raise _Reply(413, 10024, "payload too large")
        items = _json_body(body)
        if not isinstance(items, list):
            raise _Reply(400, 10029, "invalid request: the body must be a JSON array of key-value pairs")
        if len(items) > limits.BULK_WRITE_MAX_ITEMS:
            raise _Reply(400, 10029, f"invalid request: at most {limits.BULK_WRITE_MAX_ITEMS} pairs per bulk write")
        rows = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str) or "value" not in item:
                raise _Reply(400, 10029, "invalid request: every item needs a string key and a value")
            _checked_key(item["key"])
            value = item["value"]
            if not isinstance(value, str):
                raise _Reply(400, 10012, "malformed value: bulk values are strings")
            if item.get("base64"):
                try:
                    value = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise _Reply(400, 10012, "malformed value: invalid base64") from None
            rows.append({"key": item["key"], "value": value, "expiration": item.get("expiration"),
                         "expiration_ttl": item.get("expiration_ttl"), "metadata": item.get("metadata")})
        failed = set()
        share = self.faults["bulk_unsuccessful"]
        if share:
            failed = {r["key"] for r in rows if random.random() < share}
            rows = [r for r in rows if r["key"] not in failed]
        _store_call(store.put_many, rows)
        return _envelope({"successful_key_count": len(rows), "unsuccessful_keys": sorted(failed)})

    def _bulk_delete(self, store, body):
        self._count("bulk_delete")
        keys = _json_body(body)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise _Reply(400, 10029, "invalid request: the body must be a JSON array of key names")
        if len(keys) > limits.BULK_DELETE_MAX_KEYS:
            raise _Reply(400, 10029, f"invalid request: at most {limits.BULK_DELETE_MAX_KEYS} keys per bulk delete")
        for key in keys:
            _checked_key(key)
        failed = set()
        share = self.faults["bulk_unsuccessful"]
        if share:
            failed = {k for k in keys if random.random() < share}
            keys = [k for k in keys if k not in failed]
        store.delete_many(keys)
        return _envelope({"successful_key_count": len(keys), "unsuccessful_keys": sorted(failed)})

    def _bulk_get(self, store, body):
        self._count("bulk_get")
        request = _json_body(body)
        if not isinstance(request, dict) or not isinstance(request.get("keys"), list):
            raise _Reply(400, 10029, 'invalid request: expected {"keys": [...]}')
        keys, kind = request["keys"], request.get("type", "text")
        with_metadata = bool(request.get("withMetadata", False))
        if len(keys) > limits.BULK_GET_MAX_KEYS:
            raise _Reply(400, 10029, f"invalid request: at most {limits.BULK_GET_MAX_KEYS} keys per bulk get")
        if kind not in ("text", "json"):
            raise _Reply(400, 10029, "invalid request: type must be 'text' or 'json'")
        values = {}
        for key in keys:
            if not isinstance(key, str):
                raise _Reply(400, 10029, "invalid request: keys must be strings")
            entry = store.get_with_metadata(_checked_key(key))
            if entry is None:
                values[key] = None
                continue
            try:
                value = entry.value.decode("utf-8")
                if kind == "json":
                    value = json.loads(value)
            except (UnicodeDecodeError, ValueError):
                raise _Reply(400, 10012, f"malformed value: {key!r} is not {kind}") from None
            if with_metadata:
                value = {"value": value, "metadata": entry.metadata}
                if entry.expiration:
                    value["expiration"] = entry.expiration
            values[key] = value
        return _envelope({"values": values})

    def _list_namespaces(self, query):
        page = _page_argument(query, "page", 1, None, 10007)
        per_page = _page_argument(query, "per_page", 20, 1000, 10008)
        order = query.get("order", ["id"])[0]
        if order not in ("id", "title"):
            raise _Reply(400, 10043, "invalid order: use id or title")
        direction = query.get("direction", ["asc"])[0]
        if direction not in ("asc", "desc"):
            raise _Reply(400, 10044, "invalid direction: use asc or desc")
        found = sorted(LocalNamespaces(self.path).list_namespaces(), key=lambda n: n[order],
                       reverse=direction == "desc")
        chunk = [_namespace(n["id"], n["title"]) for n in found[(page - 1) * per_page: page * per_page]]
        info = {"count": len(chunk), "page": page, "per_page": per_page, "total_count": len(found)}
        return _envelope(chunk, result_info=info)

    def _create_namespace(self, body):
        title = _title_from(body)
        namespace_id = uuid.uuid4().hex
        if not LocalNamespaces(self.path).create_namespace(namespace_id, title):
            raise _Reply(400, 10014, "namespace already exists")
        return _envelope(_namespace(namespace_id, title))

    def _rename_namespace(self, namespace_id, body):
        title = _title_from(body)
        if not LocalNamespaces(self.path).rename_namespace(namespace_id, title):
            raise _Reply(400, 10014, "namespace already exists: another namespace has this title")
        return _envelope(_namespace(namespace_id, title))

    def _title_of(self, namespace_id):
        for item in LocalNamespaces(self.path).list_namespaces():
            if item["id"] == namespace_id:
                return item["title"]
        return namespace_id


def _namespace(namespace_id, title):
    return {"id": namespace_id, "title": title, "supports_url_encoding": True}


def _title_from(body):
    """The title of a create or rename body, as the API checks it."""
    request = _json_body(body)
    title = request.get("title") if isinstance(request, dict) else None
    if not isinstance(title, str) or not title:
        raise _Reply(400, 10019, "missing title")
    if len(title) > limits.MAX_NAMESPACE_TITLE:
        raise _Reply(400, 10029, f"invalid request: a title is at most {limits.MAX_NAMESPACE_TITLE} characters")
    return title


def _page_argument(query, name, default, maximum, code):
    """A whole number >= 1 (and <= ``maximum``) from the query; ``default`` when absent."""
    raw = query.get(name, [""])[0]
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value.is_integer() or value < 1 or (maximum is not None and value > maximum):
        raise _Reply(400, code, f"malformed {name} argument: {raw[:32]}")
    return int(value)


def _checked_key(key):
    """Validate a key as Cloudflare does, with Miniflare's statuses."""
    if key == "":
        raise _Reply(400, 10042, "Key names must not be empty")
    if key in (".", ".."):
        raise _Reply(400, 10042, f'Illegal key name "{key}". Please use a different name.')
    if len(key.encode("utf-8", "surrogatepass")) > limits.MAX_KEY_BYTES:
        raise _Reply(414, 10030, f"key too long: keys are at most {limits.MAX_KEY_BYTES} bytes")
    return key


def _expiry_from(query):
    def number(name, code):
        raw = query.get(name, [""])[0]
        if raw == "":
            return None
        try:
            return float(raw)
        except ValueError:
            raise _Reply(400, code, f"Invalid {name} of {raw}.") from None

    ttl = number("expiration_ttl", 10034)
    expiration = number("expiration", 10033)
    if ttl is not None and ttl < limits.MIN_TTL:
        raise _Reply(400, 10034, f"Invalid expiration_ttl of {raw_int(ttl)}. Expiration TTL must be at least 60.")
    if ttl is None and expiration is not None and expiration < clock.now() + limits.MIN_TTL:
        raise _Reply(400, 10033, f"Invalid expiration of {raw_int(expiration)}. Expiration times must be at "
                                 "least 60 seconds in the future.")
    return expiration, ttl


def raw_int(number):
    return int(number) if float(number).is_integer() else number


def _parse_metadata(raw):
    if len(raw) > limits.MAX_METADATA_BYTES:
        raise _Reply(413, 10047, f"invalid metadata: metadata is at most {limits.MAX_METADATA_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise _Reply(400, 10047, "invalid metadata: not JSON") from None


def _multipart(ctype, body):
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise _Reply(400, 10029, "invalid request: malformed multipart body")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[name] = part.get_payload(decode=True) or b""
    return parts


def _json_body(body):
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise _Reply(400, 10029, "invalid request: the body is not JSON") from None


def _store_call(fn, *args, **kwargs):
    """Run a LocalKV write, answering its validation errors as Cloudflare does: from the error's
    ``code`` and ``too_large``, never from its text."""
    try:
        return fn(*args, **kwargs)
    except KVValueError as exc:
        raise _refusal(exc) from None


def _refusal(exc):
    """Return Cloudflare's answer to a write LocalKV refused with ``exc``."""
    code, text = exc.code or limits.INVALID_REQUEST, str(exc)
    message = {limits.INVALID_METADATA: f"invalid metadata: {text}", limits.PAYLOAD_TOO_LARGE: "payload too large",
               limits.INVALID_EXPIRATION: text, limits.INVALID_EXPIRATION_TTL: text}.get(code)
    return _Reply(413 if exc.too_large else 400, code, message or f"invalid request: {text}")


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 414: "URI Too Long",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
