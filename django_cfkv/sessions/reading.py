"""SessionReader: a session's place in KV (its key names, new keys) and reading it (load, exists).

The half of SessionStore that never writes to KV: ``store`` adds saving,
deleting, moving and sweeping on top. What a read learns (``state``) is what
save() decides by. Each operation is one plan (``plans``), which the blocking
method follows (``load``) and its async twin awaits (``aload``).
"""

import asyncio
import logging
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from .. import clock, conf, limits, nearcache
from ..exceptions import KVError
from ..types import KV
from . import codec, entries, index, keys, memory, options, plans, users
from .plans import KVCall, Plan
from .state import State, Stored
from .users import SESSION_KEY

logger = logging.getLogger("django_cfkv.sessions")
security_logger = logging.getLogger("django.security.SuspiciousSession")


class SessionReader(SessionBase):
    """A session in Workers KV, as found and read: SessionStore's base (see the package for what KV allows)."""

    _session_cache: dict[str, Any]  # SessionBase's loaded data (absent until loaded)

    def __init__(self, session_key: str | None = None) -> None:
        self._format = options.session_format()
        options.key_layout()  # a bad SESSION_CFKV_KEY_LAYOUT fails here, not at the first read
        self._state = State.UNREAD
        self._stored = Stored()
        self._loading: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        super().__init__(session_key)

    @classmethod
    def key_salt_value(cls) -> str:
        return codec.salt_for(cls.__qualname__)

    @classmethod
    def get_kv(cls) -> KV:
        """Return the KV object of SESSION_CFKV_ALIAS."""
        return conf.get_kv(conf.setting("SESSION_CFKV_ALIAS"))

    @classmethod
    async def aget_kv(cls) -> KV:
        """Return the KV object of SESSION_CFKV_ALIAS, from async code (conf.aget_kv)."""
        return await conf.aget_kv(conf.setting("SESSION_CFKV_ALIAS"))

    @classmethod
    def _run(cls, plan: Plan[plans.R]) -> plans.R:
        """Follow ``plan`` with blocking KV calls."""
        return plans.run(plan, cls.get_kv)

    @classmethod
    async def _arun(cls, plan: Plan[plans.R]) -> plans.R:
        """Follow ``plan`` awaiting the KV object's twins (no thread per call)."""
        return await plans.arun(plan, cls.aget_kv)

    @classmethod
    def key_prefix(cls) -> str:
        """Return the text every KV key of this engine starts with (SESSION_CFKV_KEY_PREFIX)."""
        return conf.setting("SESSION_CFKV_KEY_PREFIX")

    @classmethod
    def kv_key(cls, session_key: str) -> str:
        """Return the KV key holding ``session_key``: the prefix and the key's SHA-256 (the plain layout: the key)."""
        return limits.validate_key(cls.key_prefix() + keys.key_name(session_key))

    @classmethod
    def ref_key(cls, ref: str) -> str:
        """Return the KV key of the session whose id hashes to ``ref`` (keys.hashed_id), in the hashed layout."""
        return limits.validate_key(cls.key_prefix() + ref)

    def _validate_session_key(self, key: str | None) -> bool:
        """Accept only keys that can never reach another KV key or URL path."""
        return keys.is_valid_key(key, getattr(self, "_format", None))

    def _get_new_session_key(self) -> str:
        """Return a fresh key without asking KV: 165 random bits make collisions negligible."""
        return keys.new_key()

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    @property
    def load_failed(self) -> bool:
        """True when KV could not be reached on load and the session is an empty stand-in."""
        return self._state is State.LOAD_FAILED

    @property
    def signing_in(self) -> bool:
        """True while the session waits for a key of its own: login() has just cycled or flushed it."""
        return self._state is State.NEW or self.session_key is None

    def note_client(self, client: dict[str, str]) -> None:
        """Record the client the session is signed in from (clients.client_of()), for the user's list of sessions.

        Kept in the session's data (``index.CLIENT_KEY``), so that each
        rewrite of its index entry knows it; nothing is kept when sessions are
        not indexed (SESSION_CFKV_USER_INDEX, the hashed layout).
        """
        if index.enabled() and self.get(index.CLIENT_KEY) != client:
            self[index.CLIENT_KEY] = client

    def load_now(self) -> dict[str, Any]:
        """Load the session unless it is already loaded; return its dict."""
        return self._get_session()  # type: ignore[attr-defined]  # SessionBase's, not in the stubs

    async def aload_now(self) -> dict[str, Any]:
        """Async twin of :meth:`load_now`."""
        return await self._aget_session()

    async def _aget_session(self, no_load: bool = False) -> dict[str, Any]:
        """SessionBase's, except that calls gathered before the session is loaded share one load: each its own
        would cost a GET apiece, and the last to finish would replace what the others had already changed."""
        self.accessed = True
        try:
            return self._session_cache
        except AttributeError:
            pass
        loop = asyncio.get_running_loop()
        if self._loading is None or self._loading[0] is not loop:  # a lock serves the loop it was made in
            self._loading = (loop, asyncio.Lock())
        async with self._loading[1]:
            if not hasattr(self, "_session_cache"):  # else loaded while this call waited
                self._session_cache = {} if self.session_key is None or no_load else await self.aload()
        self._loading = None  # loaded: nothing left to share, and the store keeps no loop (it may be copied)
        return self._session_cache

    def load(self) -> dict[str, Any]:
        return self._run(self._load())

    async def aload(self) -> dict[str, Any]:
        return await self._arun(self._load())

    def _load(self) -> Plan[dict[str, Any]]:
        self._state, self._stored = State.UNREAD, Stored()
        if self.session_key is None:  # no key, or one that failed validation: nothing to read
            return {}
        if self.deleted_here(self.session_key):  # KV may still serve it: deleted here is missing here
            self._session_key = None
            return {}
        try:
            raw, from_near = yield from self._get_raw(self.session_key)
        except KVError:
            if options.on_load_error() == "raise":
                raise
            # Keep the key: the cookie stays, and save() refuses to overwrite
            # the stored session with this empty stand-in.
            logger.error("Session could not be loaded from Workers KV; serving an empty session.", exc_info=True)
            self._state = State.LOAD_FAILED
            return {}
        value = self._read(raw, self.session_key)
        if value is None:
            self._session_key = None
            return {}
        data, user_ref = (yield from users.django_data(value)) if self._format == "json" else (value.data, None)
        self._state = State.NEAR if from_near else State.READ
        self._stored = Stored(canonical=self._canonical(data), expires=value.expires, ends=value.ends,
                              created=value.created, extra=value.extra, user_ref=user_ref, user=data.get(SESSION_KEY),
                              index=entries.recorded(data, value.expires), index_known=True)
        return data

    def _get_raw(self, session_key: str) -> Plan[tuple[bytes | None, bool]]:
        """Return ``(raw value, from_near)`` for ``session_key``: from the near cache (if on) or one GET."""
        kv_key, near = self.kv_key(session_key), memory.near_cache()
        cached: Any = nearcache.MISSING if near is None else near.get(kv_key)
        if cached is not nearcache.MISSING:
            return cached, True
        generation = 0 if near is None else near.generation()
        raw = yield KVCall("get", kv_key)
        if near is not None and raw is not None:  # a miss is not kept: a new session must be seen
            near.fill(kv_key, raw, generation)
        return raw, False

    def _read(self, raw: bytes | None, session_key: str) -> codec.Value | None:
        """Return the live Value in ``session_key``'s ``raw``, or None (missing, expired, unreadable: logged)."""
        if raw is None:
            return None
        try:
            value = codec.parse(raw, self._format, self.key_salt_value(), session_key)
        except ValueError as exc:
            security_logger.warning("Session data corrupted (%s)", exc)
            return None
        if value.expires is not None and value.expires <= clock.now():
            return None
        return value

    def exists(self, session_key: str) -> bool:
        """Return True if a live session is stored under ``session_key``. One GET."""
        return self._run(self._exists(session_key))

    async def aexists(self, session_key: str) -> bool:
        return await self._arun(self._exists(session_key))

    def _exists(self, session_key: str) -> Plan[bool]:
        if not keys.is_valid_key(session_key, self._format) or self.deleted_here(session_key):
            return False
        return self._read((yield from self._get_raw(session_key))[0], session_key) is not None

    @staticmethod
    def deleted_here(session_key: str) -> bool:
        """Return True if this process deleted or revoked the session in the last minute (no API call)."""
        return keys.hashed_id(session_key) in memory.recently_deleted

    def _live_in_kv(self, session_key: str) -> Plan[bool]:
        """Return True if KV itself (one GET, never the near cache) holds this live session."""
        return self._read((yield KVCall("get", self.kv_key(session_key))), session_key) is not None

    def _owner_in_kv(self, session_key: str) -> Plan[str | None]:
        try:
            value = self._read((yield KVCall("get", self.kv_key(session_key))), session_key)
        except KVError as exc:
            logger.warning("The user of a session being deleted could not be read from Workers KV (%s); its entry "
                           "in the user's index is left to expire with it.", type(exc).__name__)
            return None
        return None if value is None else (yield from entries.owner_of(value, self._format))

    def _canonical(self, data: dict[str, Any]) -> str | bytes:
        return codec.canonical(data, self._format, self.serializer)
