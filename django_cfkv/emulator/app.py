"""The emulator as a WSGI application: each call's way through quota, token, faults, route and handler.

Where Cloudflare's behaviour is uncertain it follows Miniflare, Cloudflare's own local emulator.
The ``/__emulator/`` paths (faults and stats) are the emulator's own, for tests and benchmarks.
"""

import hmac
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from .. import clock
from ..local import LocalKV, LocalNamespaces
from ..text import one_line
from . import routes
from .faults import Faults
from .wire import REASONS, Answer, Call, Reply, envelope, error_answer, json_answer, read_body, redact

API_PREFIX = "/client/v4"
QUOTA_CALLS = 1200
QUOTA_WINDOW = 300
logger = logging.getLogger("django_cfkv.emulator")


class EmulatorApp:
    """WSGI app serving the KV REST API; each namespace id is its own namespace."""

    def __init__(self, path: "str | os.PathLike[str]", *, token: str | None = None, enforce_quota: bool = False,
                 **faults: float) -> None:
        self.path = str(path)
        self.token = token
        self.enforce_quota = enforce_quota
        self.faults = Faults(**faults)
        self.stats: dict[str, int] = {}
        self._stats_lock = threading.Lock()
        self._window = (0.0, 0)  # (start, calls) of the simulated 5-minute quota

    def reset_quota(self) -> None:
        """Start a fresh simulated 5-minute API window."""
        with self._stats_lock:
            self._window = (0.0, 0)

    def store(self, namespace_id: str) -> LocalKV:
        """Return the LocalKV of ``namespace_id``.

        Made per call and never kept: any id is a namespace, so a cache of
        them would grow with every id a client ever sent.
        """
        return LocalKV(self.path, namespace=namespace_id)

    # WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers, body = self.handle(environ)
        start_response(f"{status} {REASONS.get(status, 'Status')}", list(headers.items()))
        return [body]

    def handle(self, environ: Mapping[str, Any]) -> Answer:
        """Return (status, headers, body bytes) for one request.

        The body is read only once the call is known to be authorised and routed, and never past
        the largest body its route takes (413 before reading, when the request declares more).
        """
        path = (environ.get("RAW_URI") or environ.get("PATH_INFO", "")).split("?", 1)[0]
        method = environ["REQUEST_METHOD"]
        headers = {"Ratelimit": ""}
        try:
            if path.startswith("/__emulator/"):
                self._check_token(environ)
                result = self._admin(method, path, read_body(environ, routes.SMALL_BODY))
                return json_answer(envelope(result))
            headers = self._quota()
            self._check_token(environ)
            self.faults.inject()
            status, extra, payload = self._answer(method, path, environ)
            headers.update(extra)
            return status, headers, payload
        except Reply as reply:
            return error_answer(reply, headers)
        except Exception:  # a bug or a locked database: answer as Cloudflare would, not by hanging up
            logger.exception("The emulator failed on %s", one_line(f"{method} {redact(path)}"))  # as a client sent
            return error_answer(Reply(500, 10001, "service temporarily unavailable"), headers)

    def _answer(self, method: str, path: str, environ: Mapping[str, Any]) -> Answer:
        route = routes.match(method, path)
        if route.endpoint:
            self._count(route.endpoint)
        call = Call(method, parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
                    read_body(environ, route.body_limit), environ.get("CONTENT_TYPE", ""),
                    namespace=route.namespace, key=route.key, unsuccessful=self.faults.unsuccessful)
        if route.records:
            call.records = LocalNamespaces(self.path)
        else:
            call.store = self.store(route.namespace or "")
        return route.handler(call)

    def _quota(self) -> dict[str, str]:
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
            raise Reply(429, 10022, "too many requests", {**headers, "Retry-After": str(reset)})
        return headers

    def _check_token(self, environ: Mapping[str, Any]) -> None:
        if self.token is None:
            return
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not auth.startswith("Bearer "):
            raise Reply(401, 10000, "Authentication error")
        if not hmac.compare_digest(auth[7:].encode(), self.token.encode()):
            raise Reply(403, 10000, "Authentication error")

    def _admin(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        if path == "/__emulator/faults":
            if method in ("POST", "PUT"):
                try:
                    self.faults.update(json.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    raise Reply(400, 10029, str(exc))
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
        raise routes.no_route()

    def _count(self, endpoint: str) -> None:
        with self._stats_lock:
            self.stats[endpoint] = self.stats.get(endpoint, 0) + 1
