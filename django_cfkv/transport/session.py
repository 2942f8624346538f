"""The pooled requests.Session a transport shares between threads, and the token it carries.

Threads: one ``requests.Session`` is shared by all threads of a process. Its
connection pool (urllib3) is thread-safe; the parts of a Session that are not
(cookie handling, redirect re-authentication) are switched off: cookies are
refused and redirects are not followed (the transport sends with
``allow_redirects=False``). Headers are set once, at construction. After a fork
the child builds a new Session rather than share sockets.
"""

import http.cookiejar
import os
import threading
from typing import Any

import requests

from .. import __version__
from ..exceptions import CFKVConfigurationError
from .deadline import DeadlineAdapter
from .exchange import ACCEPT_ENCODING, POOL_SIZE


def checked_token(token: str) -> str:
    """Return the API token without surrounding whitespace; refuse one no HTTP header can carry.

    Otherwise requests' own error, which quotes the whole header, would put
    the token into exception text and logs.
    """
    if not isinstance(token, str):
        return token
    token = token.strip()  # a trailing newline from a file or an env var is a common slip
    if not all(33 <= ord(char) < 127 for char in token):
        raise CFKVConfigurationError(
            "The Cloudflare API token contains spaces, control or non-ASCII characters, so no HTTP "
            "header can carry it. Copy API_TOKEN (or $CLOUDFLARE_API_TOKEN) again from the dashboard.",
            "django_cfkv.E008",
        )
    return token


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class SharedSession:
    """One requests.Session per process, built on first use, with the token in its headers."""

    def __init__(self, api_token: str) -> None:
        self._token = checked_token(api_token)
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        return "<SharedSession>"  # never the token

    @property
    def token(self) -> str:
        """The checked API token (the async sessions carry it too)."""
        return self._token

    def get(self) -> requests.Session:
        """Return this process's Session, building it after a fork or a close()."""
        if self._session is None or self._pid != os.getpid():
            with self._lock:
                if self._session is None or self._pid != os.getpid():
                    self._session, self._pid = self._build(), os.getpid()
        return self._session

    def _build(self) -> requests.Session:
        session = requests.Session()
        session.cookies.set_policy(_NoCookies())
        session.headers.update({
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"django-cfkv/{__version__}",
            "Accept-Encoding": ACCEPT_ENCODING,
        })
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def close(self) -> None:
        """Close pooled connections (a new pool is made on next use)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
