"""Session ids and the KV key names that hold them.

An id is the cookie value or the bearer token. In the hashed layout (the
default) its session lives at the lowercase hex SHA-256 of the id, so nothing
a read-only token can list or read works as a cookie or a token; a Worker
derives the same name from the id it holds with ``crypto.subtle.digest``.
The plain layout keeps the id itself in the key name.
"""

import hashlib
import re

from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.utils.crypto import get_random_string

from .options import key_layout, session_format

KEY_LENGTH = 32  # 36**32 ~ 2**165 possible keys
# Django's own rules: its key alphabet, at least 8 characters, at most the
# 40 its database engine stores.
_DJANGO_KEY = re.compile(rf"[{VALID_KEY_CHARS}]{{8,40}}")
# crypto.randomUUID(), the ids Workers session code makes (JSON format only).
_UUID_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def hashed_id(session_id: str) -> str:
    """Return the lowercase hex SHA-256 of a session id's UTF-8 bytes: its key name in the hashed layout.

    Unkeyed, so a Worker derives it from the id it holds; ids carry 122 to 165
    random bits, so the hash cannot be turned back into a usable id.
    """
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def is_valid_key(key: object, fmt: str | None = None) -> bool:
    """Return True if ``key`` may name a session: Django's alphabet and length, or a UUID in the JSON format."""
    if not isinstance(key, str):
        return False
    if _DJANGO_KEY.fullmatch(key):
        return True
    return (fmt or session_format()) == "json" and _UUID_KEY.fullmatch(key) is not None


def new_key() -> str:
    """Return a fresh session id without asking KV: 165 bits from the OS CSPRNG make collisions negligible."""
    return get_random_string(KEY_LENGTH, VALID_KEY_CHARS)


def key_name(session_id: str) -> str:
    """Return the part of the KV key (after the prefix) that holds ``session_id`` in SESSION_CFKV_KEY_LAYOUT."""
    return session_id if key_layout() == "plain" else hashed_id(session_id)
