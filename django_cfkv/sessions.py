"""Django sessions in Workers KV: ``SESSION_ENGINE = "django_cfkv.sessions"``.

Each session is one KV value at ``SESSION_CFKV_KEY_PREFIX`` + the lowercase
hex SHA-256 of its id (the cookie value or bearer token), so that nothing a
read-only token can list or read works as a cookie or a token; a Worker
derives the same key from the id it holds with ``crypto.subtle.digest``.
``SESSION_CFKV_KEY_LAYOUT = "plain"`` keeps the id itself in the key name
(``session:<id>``). Values are written with
metadata ``{"kind": "session", "expires": <epoch s>}`` and a KV TTL of
``max(60, expiry age)``. The exact expiry travels inside the value and is
checked on every load, so a 1-second session is gone after 1 second even though
KV keeps the entry for at least 60.

Two value formats (``SESSION_CFKV_FORMAT``):

* ``"signed"`` (default): Django's signed, compressed encoding of
  ``{"createdAt", "expiresAt", "data"}``; a tampered value is an empty session.
* ``"json"``: plain JSON a Worker reads with ``env.SESSIONS.get(key, "json")``:
  ``{"userId", "createdAt", "expiresAt", "data"}`` (times in epoch ms). Sessions
  a Worker writes (``{userId, email, createdAt, expiresAt}`` under the key of
  a ``crypto.randomUUID()`` id) are read too: the user is the one ``userId`` names.

What KV cannot do, and how this engine copes:

* No atomic create. New keys are 32 characters from a 36-letter alphabet
  drawn from the OS CSPRNG (165 bits), so a collision is negligible and
  creating a session costs one PUT and no existence check. ``save(must_create=True)``
  on a key this store did not draw checks with one GET (a best effort: another
  writer could still win between the GET and the PUT).
* No compare-and-set. ``save()`` raises UpdateError when the session is gone,
  judged by the GET ``load()`` made or, if this store never read the session
  from KV itself (not loaded, or loaded from the near cache), by one GET just
  before the write; a key this process deleted reads as missing here (no
  GET) and is never written back.
  A logout elsewhere may take up to ~60 s to be seen here (KV's caches), so no
  check can make this exact: it only narrows the window.
* Near cache (off by default). With ``SESSION_CFKV_NEAR_CACHE_TIMEOUT``
  seconds > 0, a session read from KV is kept in this process's memory that
  long, so repeated requests skip the GET. A flush, delete or cycle_key in
  this process forgets it at once; a logout in ANOTHER process is seen by
  loads here only after up to that many seconds, but a write (an expiry
  refresh included) checks KV first, so it never brings such a session back.
* One write per second per key. ``cycle_key()`` reserves the new key without
  writing it (the next ``save()`` writes once), and an unchanged session's
  expiry is refreshed at most once per ``SESSION_CFKV_REFRESH_INTERVAL``.
"""

import hashlib
import json
import logging
import math
import re
import threading

from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError, SessionBase, UpdateError
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils.crypto import get_random_string

from . import clock, conf, limits, metadata, nearcache
from .exceptions import CFKVConfigurationError, KVError

logger = logging.getLogger("django_cfkv.sessions")
security_logger = logging.getLogger("django.security.SuspiciousSession")

FORMATS = ("signed", "json")
LAYOUTS = ("hashed", "plain")
ON_LOAD_ERROR_CHOICES = ("empty", "raise")
KEY_LENGTH = 32  # 36**32 ~ 2**165 possible keys
# Django's own rules: its key alphabet, at least 8 characters, at most the
# 40 its database engine stores.
_DJANGO_KEY = re.compile(rf"[{VALID_KEY_CHARS}]{{8,40}}")
# crypto.randomUUID(), the ids Workers session code makes (JSON format only).
_UUID_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_RESERVED = ("createdAt", "expiresAt", "absoluteExpiresAt", "data")

# The session keys django.contrib.auth uses (imported from there lazily).
SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY = "_auth_user_id", "_auth_user_backend", "_auth_user_hash"


class _RecentlyDeleted:
    """Keys this process deleted in the last minute: read as missing, never written back here.

    KV may serve a deleted value for up to ~60 s, so without this a token
    revoked or a session logged out here could still be read, and refreshed,
    by the next request in this same process. It costs no API call (a
    recently deleted key is not even read); other processes are covered only
    by KV reads, with KV's ~60 s staleness.
    """

    TTL, MAX = 60.0, 10_000

    def __init__(self):
        self._lock = threading.Lock()
        self._keys = {}

    def add(self, key):
        now = clock.monotonic()
        with self._lock:
            self._keys.pop(key, None)
            self._keys[key] = now
            while self._keys and (len(self._keys) > self.MAX or now - next(iter(self._keys.values())) > self.TTL):
                self._keys.pop(next(iter(self._keys)))

    def discard(self, key):
        with self._lock:
            self._keys.pop(key, None)

    def clear(self):
        with self._lock:
            self._keys.clear()

    def after_fork(self):
        self._lock = threading.Lock()  # the parent's may have been held by another thread

    def __contains__(self, key):
        with self._lock:
            when = self._keys.get(key)
        return when is not None and clock.monotonic() - when <= self.TTL


_recently_deleted = _RecentlyDeleted()
# A test pointing CFKV or the session settings elsewhere starts with nothing deleted.
conf.on_reset(_recently_deleted.clear, settings=("CFKV", "SESSION_*"))
conf.on_reset(_recently_deleted.after_fork, after_fork=True)


def _near_cache():
    """Return the process-wide near cache of session values, or None (the default: off)."""
    space = ("sessions", conf.setting("SESSION_CFKV_ALIAS"), conf.setting("SESSION_CFKV_KEY_PREFIX"))
    return nearcache.near_cache(space, conf.setting("SESSION_CFKV_NEAR_CACHE_TIMEOUT"))


def _forget_nearby(*kv_keys):
    """Drop keys this process just wrote or deleted from the near cache (after the write: no read may refill)."""
    near = _near_cache()
    if near is not None:
        near.invalidate_many(kv_keys)


def session_format():
    """Return SESSION_CFKV_FORMAT, or raise CFKVConfigurationError if it is not a known one."""
    fmt = conf.setting("SESSION_CFKV_FORMAT")
    if fmt not in FORMATS:
        raise CFKVConfigurationError(f"SESSION_CFKV_FORMAT is {fmt!r}; use 'signed' or 'json'.", "django_cfkv.E202")
    return fmt


def key_layout():
    """Return SESSION_CFKV_KEY_LAYOUT, or raise CFKVConfigurationError if it is not a known one."""
    layout = conf.setting("SESSION_CFKV_KEY_LAYOUT")
    if layout not in LAYOUTS:
        raise CFKVConfigurationError(
            f"SESSION_CFKV_KEY_LAYOUT is {layout!r}; use 'hashed' (the default) or 'plain'.", "django_cfkv.E201")
    return layout


def hashed_id(session_id):
    """Return the lowercase hex SHA-256 of a session id's UTF-8 bytes: its key name in the hashed layout.

    Unkeyed, so a Worker derives it from the id it holds; ids carry 122 to 165
    random bits, so the hash cannot be turned back into a usable id.
    """
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def is_valid_key(key, fmt=None):
    """Return True if ``key`` may name a session: Django's alphabet and length, or a UUID in the JSON format."""
    if not isinstance(key, str):
        return False
    if _DJANGO_KEY.fullmatch(key):
        return True
    return (fmt or session_format()) == "json" and _UUID_KEY.fullmatch(key) is not None


def decode_value(raw, format=None):
    """Return ``(session_dict, expires)`` for a stored session value.

    ``raw`` is the value's bytes (or text), ``format`` "signed" or "json"
    (default: SESSION_CFKV_FORMAT); ``expires`` is epoch seconds, or None when
    the value carries no expiry. For the JSON format the dict holds the
    Worker's top-level fields (``userId``, ``email``...) beside ``data``'s
    entries. Raise ValueError, saying why, if the value cannot be read (bad
    signature, not JSON, malformed fields).
    """
    stored = _parse(raw, format or session_format(), SessionStore)
    view = dict(stored.extra)
    view.update(stored.data)
    return view, stored.expires


class _Stored:
    """A parsed session value."""

    __slots__ = ("data", "expires", "created", "extra", "ends")

    def __init__(self, data, expires, created, extra, ends):
        self.data, self.expires, self.created, self.extra, self.ends = data, expires, created, extra, ends


def _parse(raw, fmt, store_class, session_key=None):
    """Return a _Stored for ``raw``, or raise ValueError saying why it cannot be read.

    A signed value names the session key it was written for (its hash): one
    copied to another key by someone who can write the namespace is refused.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the session value is not UTF-8 text") from None
    if fmt == "signed":
        try:
            envelope = signing.loads(raw, salt=store_class.key_salt_value(), serializer=_serializer())
        except signing.BadSignature as exc:
            raise ValueError("the session value's signature is invalid") from exc
        except Exception as exc:  # what the serializer raises on garbage varies
            raise ValueError(f"the session value cannot be decoded: {type(exc).__name__}") from exc
    else:
        try:
            envelope = json.loads(raw)
        except ValueError as exc:
            raise ValueError("the session value is not JSON") from exc
    if not isinstance(envelope, dict):
        raise ValueError("the session value is not an object")
    written_for = envelope.get("keyHash") if fmt == "signed" else None  # absent: written before it was added
    if written_for is not None and session_key is not None and written_for != hashed_id(session_key):
        raise ValueError("the session value was written for another session key")
    data = envelope.get("data", {})
    times = [envelope.get(name) for name in ("expiresAt", "absoluteExpiresAt", "createdAt")]
    if not isinstance(data, dict) or not all(_is_number(t, optional=True) for t in times):
        raise ValueError("the session value has a malformed data, expiresAt, absoluteExpiresAt or createdAt field")
    expires, ends = (None if t is None else t / 1000 for t in times[:2])
    if ends is not None:  # a Worker may have slid expiresAt past the end: the end wins
        expires = ends if expires is None else min(expires, ends)
    extra = {k: v for k, v in envelope.items() if k not in _RESERVED} if fmt == "json" else {}
    return _Stored(data, expires, times[2], extra, ends)


def _is_number(value, optional=False):
    if value is None:
        return optional
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _serializer():
    from django.utils.module_loading import import_string

    return import_string(conf.setting("SESSION_SERIALIZER"))


class SessionStore(SessionBase):
    """A session in Workers KV (see the module docstring for what KV allows)."""

    #: True for a session a bearer token names (BearerSessionMiddleware sets
    #: it): cycle_key() keeps the key, which is the token the client holds.
    keep_key = False

    def __init__(self, session_key=None):
        self._format = session_format()
        key_layout()  # a bad SESSION_CFKV_KEY_LAYOUT fails here, not at the first read
        self._pending = False  # key drawn here and not written yet
        self._loaded = False  # this store read the session from KV
        self._load_failed = False
        self._forget_stored()
        super().__init__(session_key)

    @classmethod
    def key_salt_value(cls):
        return "django.contrib.sessions." + cls.__qualname__

    @classmethod
    def get_kv(cls):
        """Return the KV object of SESSION_CFKV_ALIAS."""
        return conf.get_kv(conf.setting("SESSION_CFKV_ALIAS"))

    @classmethod
    def key_prefix(cls):
        """Return the text every KV key of this engine starts with (SESSION_CFKV_KEY_PREFIX)."""
        return conf.setting("SESSION_CFKV_KEY_PREFIX")

    @classmethod
    def kv_key(cls, session_key):
        """Return the KV key holding ``session_key``: the prefix and the key's SHA-256 (the plain layout: the key)."""
        name = session_key if key_layout() == "plain" else hashed_id(session_key)
        return limits.validate_key(cls.key_prefix() + name)

    def _forget_stored(self):
        self._snapshot = None  # canonical form of the data last read or written
        self._stored_expires = None
        self._ends = None  # the absolute end (epoch s) that no refresh passes, if any
        self._created = None
        self._extra = {}  # the Worker's top-level fields (JSON format)
        self._user_ref = None  # (Django's user id, the userId value it maps to)
        self._from_near = False  # the copy came from the near cache, not a GET
        self._stored_user = None  # Django's user id in the copy last read or written

    def _validate_session_key(self, key):
        """Accept only keys that can never reach another KV key or URL path."""
        return is_valid_key(key, getattr(self, "_format", None))

    def _get_new_session_key(self):
        """Return a fresh key without asking KV: 165 random bits make collisions negligible."""
        return get_random_string(KEY_LENGTH, VALID_KEY_CHARS)

    async def _aget_new_session_key(self):
        return self._get_new_session_key()

    # Reading

    @property
    def load_failed(self):
        """True when KV could not be reached on load and the session is an empty stand-in."""
        return self._load_failed

    def load_now(self):
        """Load the session unless it is already loaded; return its dict."""
        return self._get_session()

    def load(self):
        self._loaded = self._load_failed = False
        self._forget_stored()
        if self.session_key is None:  # no key, or one that failed validation: nothing to read
            return {}
        if self.session_key in _recently_deleted:  # KV may still serve it: deleted here is missing here
            self._session_key = None
            return {}
        try:
            raw, from_near = self._get_raw(self.session_key)
        except KVError:
            on_error = conf.setting("SESSION_CFKV_ON_LOAD_ERROR")
            if on_error not in ON_LOAD_ERROR_CHOICES:
                raise CFKVConfigurationError(
                    f"SESSION_CFKV_ON_LOAD_ERROR is {on_error!r}; use 'empty' or 'raise'.",
                    "django_cfkv.E203") from None
            if on_error == "raise":
                raise
            # Keep the key: the cookie stays, and save() refuses to overwrite
            # the stored session with this empty stand-in.
            logger.error("Session could not be loaded from Workers KV; serving an empty session.", exc_info=True)
            self._load_failed = True
            return {}
        stored = self._read(raw, self.session_key)
        if stored is None:
            self._session_key = None
            return {}
        self._loaded, self._from_near = True, from_near
        self._created, self._stored_expires, self._extra = stored.created, stored.expires, stored.extra
        self._ends = stored.ends
        data = self._resolve_user(stored) if self._format == "json" else stored.data
        self._snapshot, self._stored_user = self._canonical(data), data.get(SESSION_KEY)
        return data

    def _get_raw(self, session_key):
        """Return ``(raw value, from_near)`` for ``session_key``: from the near cache (if on) or one GET."""
        kv_key, near = self.kv_key(session_key), _near_cache()
        raw = nearcache.MISSING if near is None else near.get(kv_key)
        if raw is not nearcache.MISSING:
            return raw, True
        generation = None if near is None else near.generation()
        raw = self.get_kv().get(kv_key)
        if near is not None and raw is not None:  # a miss is not kept: a new session must be seen
            near.fill(kv_key, raw, generation)
        return raw, False

    def _read(self, raw, session_key):
        """Return the live _Stored in ``session_key``'s ``raw``, or None (missing, expired, unreadable: logged)."""
        if raw is None:
            return None
        try:
            stored = _parse(raw, self._format, type(self), session_key)
        except ValueError as exc:
            security_logger.warning("Session data corrupted (%s)", exc)
            return None
        if stored.expires is not None and stored.expires <= clock.now():
            return None
        return stored

    def exists(self, session_key):
        """Return True if a live session is stored under ``session_key``. One GET."""
        if not is_valid_key(session_key, self._format) or session_key in _recently_deleted:
            return False
        return self._read(self._get_raw(session_key)[0], session_key) is not None

    def _live_in_kv(self):
        """Return True if KV itself (one GET, never the near cache) holds this live session."""
        return self._read(self.get_kv().get(self.kv_key(self.session_key)), self.session_key) is not None

    # Writing

    def create(self):
        self._session_key = self._get_new_session_key()
        self._pending = True
        self.save(must_create=True)
        self.modified = True

    def save(self, must_create=False):
        """Write the session: one PUT, none when nothing changed and no refresh is due."""
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        if self._load_failed:
            if not self.modified:
                return  # nothing to write: the stored session is untouched
            raise KVError("The session could not be loaded from Workers KV, so it is not saved: "
                          "writing it would replace the stored session with partial data.")
        if must_create:
            if not self._pending and self.exists(self.session_key):
                raise CreateError
        canonical = self._canonical(data)
        if not must_create and self.session_key in _recently_deleted:
            if canonical == self._snapshot:
                return  # only an expiry refresh: the deletion (logout, revocation) wins
            raise UpdateError
        expires = clock.now() + super().get_expiry_age()
        if self._ends is not None:
            expires = min(expires, self._ends)  # sliding refresh only within the absolute lifetime
        if must_create or self._pending:
            return self._write(data, expires, canonical)
        if self._is_fresh(canonical, expires):
            return
        try:
            # A copy this store did not GET itself may outlive a logout or
            # revocation elsewhere: never write it back without asking KV.
            if (self._from_near or not self._loaded) and not self._live_in_kv():
                raise UpdateError
            self._write(data, expires, canonical)
        except KVError as exc:
            if canonical != self._snapshot:
                raise  # a real change is never dropped silently
            # Only the expiry refresh failed (429, budget, outage): the request
            # has succeeded and the stored session is intact; a later one retries.
            logger.warning("Session expiry refresh not written to Workers KV (%s: %s); the stored session "
                           "is unchanged.", type(exc).__name__, exc)

    def _is_fresh(self, canonical, expires):
        """Return True if the stored copy has this data and an expiry refreshed recently enough."""
        if canonical != self._snapshot or self._stored_expires is None:
            return False
        return expires - self._stored_expires < conf.setting("SESSION_CFKV_REFRESH_INTERVAL")

    def _write(self, data, expires, canonical):
        now = clock.now()
        created = self._created if self._created is not None else int(now * 1000)
        envelope = {"createdAt": created, "expiresAt": int(expires * 1000), "data": data}
        if self._ends is not None:
            envelope["absoluteExpiresAt"] = int(self._ends * 1000)
        if self._format == "json":
            envelope = self._json_envelope(envelope)
            value = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        else:
            envelope["keyHash"] = hashed_id(self.session_key)  # binds the signed value to its key
            value = signing.dumps(envelope, salt=self.key_salt_value(), serializer=self.serializer, compress=True)
        kv_key = self.kv_key(self.session_key)
        try:
            self.get_kv().put(
                kv_key, value,
                expiration_ttl=metadata.kv_ttl(expires, now),
                # "size" lets `manage.py cfkv stats` total sizes from listings alone.
                metadata=metadata.build(metadata.SESSION, expires=expires, size=len(value.encode("utf-8"))),
            )
        finally:
            _forget_nearby(kv_key)
        _recently_deleted.discard(self.session_key)  # save() writes a deleted key only to create it anew
        self._pending = self._from_near = False
        self._created, self._stored_expires, self._snapshot = created, expires, canonical
        self._stored_user = data.get(SESSION_KEY)

    def set_absolute_expiry(self, seconds):
        """End the session ``seconds`` from now however often it is used: refreshes slide it only up to then.

        Stored with the session (``absoluteExpiresAt``, epoch ms, in the
        value) and written by the next save(), even if nothing else changed.
        """
        self._get_session()  # a load replaces what is stored here: load first
        self._ends = clock.now() + seconds
        self._snapshot = None

    def get_expiry_age(self, **kwargs):
        """Return Django's expiry age, never past the absolute lifetime (set_absolute_expiry())."""
        age = super().get_expiry_age(**kwargs)  # loads the session, and with it the end
        if kwargs or self._ends is None:
            return age
        return max(0, min(age, math.ceil(self._ends - clock.now())))

    def _canonical(self, data):
        if self._format == "json":
            return json.dumps(data, separators=(",", ":"), sort_keys=True)
        return self.serializer().dumps(data)

    def delete(self, session_key=None):
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        if is_valid_key(session_key, self._format):
            try:
                self.get_kv().delete(self.kv_key(session_key))
            finally:
                _forget_nearby(self.kv_key(session_key))
            _recently_deleted.add(session_key)
        if session_key == self.session_key:
            self._loaded = False
            self._forget_stored()

    def cycle_key(self):
        """Move the data to a new key and delete the old one (a bearer session keeps its key: keep_key).

        The new key is written by the next save() only: Django's login() sets
        the user right after this, and KV allows one write per second per key.
        The Worker's fields (``email``...), ``userId`` and ``createdAt`` move
        along only when the session still holds the user it was stored with
        (update_session_auth_hash() after a password change). login() cycles
        only an anonymous session, or one whose ``userId`` names no user: it is
        about to become someone else's, so those fields start afresh.
        """
        data = self._session
        key = self.session_key
        if data.get(SESSION_KEY) is None or data.get(SESSION_KEY) != self._stored_user:
            self._created, self._extra, self._user_ref = None, {}, None
        if self.keep_key:
            # A new key would delete the token and the client could never learn
            # its successor; a token the server issued cannot be fixed by a third party.
            self.modified = True
            return
        self._session_key = self._get_new_session_key()
        self._pending, self._loaded, self._load_failed = True, False, False
        self._snapshot = self._stored_expires = None
        self._session_cache = data
        self.modified = True
        if key:
            self.delete(key)

    async def acycle_key(self):
        from asgiref.sync import sync_to_async

        await self._aget_session()
        await sync_to_async(self.cycle_key)()

    def flush(self):
        super().flush()
        self._extra, self._user_ref = {}, None

    async def aflush(self):
        await super().aflush()
        self._extra, self._user_ref = {}, None

    @classmethod
    def clear_expired(cls):
        """Delete sessions past their exact expiry that KV's TTL has not removed yet.

        Works from the key listing's metadata alone (no value reads) and
        deletes in bulk. Entries without our metadata (sessions a Worker
        wrote) are left to their KV TTL. Return the number of keys deleted.
        """
        kv, now = cls.get_kv(), clock.now()
        expired = []
        for info in kv.iter_keys(prefix=cls.key_prefix()):
            meta = metadata.read(info.metadata)
            if meta.kind == metadata.SESSION and meta.expires is not None and meta.expires <= now:
                expired.append(info.name)
        if expired:
            try:
                kv.delete_many(expired)
            finally:
                _forget_nearby(*expired)
        return len(expired)

    # The JSON format and the user a Worker names

    def _json_envelope(self, envelope):
        """Return the JSON value: the Worker's fields, ``userId`` and Django's data (minus the user id)."""
        data = dict(envelope["data"])
        auth_id = data.pop(SESSION_KEY, None)
        return {**self._extra, "userId": self._user_id_for(auth_id), **envelope, "data": data}

    def _user_id_for(self, auth_id):
        """Return the ``userId`` value for Django's user id: a string, as ``_auth_user_id`` is.

        Under SESSION_CFKV_USER_FIELD it is that field's value as text. A
        ``userId`` a Worker wrote is kept as it was while the user is unchanged.
        """
        if auth_id is None:
            return None
        if self._user_ref and self._user_ref[0] == auth_id:
            return self._user_ref[1]  # unchanged: keep the Worker's value as it wrote it
        field = conf.setting("SESSION_CFKV_USER_FIELD")
        if field == "pk":
            return str(auth_id)
        from django.contrib.auth import get_user_model

        value = get_user_model()._default_manager.filter(pk=auth_id).values_list(field, flat=True).first()
        return None if value is None else str(value)

    def _resolve_user(self, stored):
        """Return the session dict with Django's auth keys for the user ``userId`` names.

        ``userId`` is authoritative, and names a user only in its exact form
        (see :func:`user_lookup_value`); any other value is an anonymous
        session. When Django wrote the session, its auth hash is in ``data``,
        and Django's own check logs out a session whose ``userId`` was changed
        to another user. A session a Worker wrote gets the user's current hash
        and the first AUTHENTICATION_BACKENDS entry.
        """
        data = dict(stored.data)
        data.pop(SESSION_KEY, None)
        user_id = stored.extra.get("userId")
        field = conf.setting("SESSION_CFKV_USER_FIELD")
        lookup = None if user_id is None else user_lookup_value(field, user_id)
        if lookup is not None and field == "pk" and HASH_SESSION_KEY in data and BACKEND_SESSION_KEY in data:
            auth_id = str(lookup)  # Django's own check of the hash finds the user: no query here
        else:
            user = None if lookup is None else _find_user(field, lookup, user_id)
            if user is None:
                data.pop(BACKEND_SESSION_KEY, None)
                data.pop(HASH_SESSION_KEY, None)
                return data
            auth_id = user._meta.pk.value_to_string(user)
            data.setdefault(BACKEND_SESSION_KEY, conf.setting("AUTHENTICATION_BACKENDS")[0])
            if hasattr(user, "get_session_auth_hash"):
                data.setdefault(HASH_SESSION_KEY, user.get_session_auth_hash())
        data[SESSION_KEY] = auth_id
        self._user_ref = (auth_id, user_id)
        return data


def user_lookup_value(field, user_id):
    """Return the value of the user model's ``field`` that ``user_id`` names, or None if it names none.

    A Worker-written ``userId`` names a user only in the exact form Django
    would write or a Worker would take from the user: the field's value as a
    string (``"42"``, a UUID in its canonical text, an email as stored) or,
    for an integer field, that JSON integer (``42``). Anything else (``true``,
    ``42.0``, ``"042"``, ``" 42"``, a list, an integer out of the field's
    range...) is None, so it can never be coerced into some user.
    """
    if isinstance(user_id, bool) or not isinstance(user_id, (int, str)) or user_id == "":
        return None
    from django.contrib.auth import get_user_model

    meta = get_user_model()._meta
    model_field = meta.pk if field == "pk" else meta.get_field(field)
    try:
        value = model_field.to_python(user_id)
        model_field.run_validators(value)  # the integer range, max_length...
    except (ValidationError, ValueError, TypeError, OverflowError):
        value = None
    exact = value is not None and (
        user_id == str(value) if isinstance(user_id, str) else type(value) is int and user_id == value)
    if not exact:
        logger.warning("Session userId (a %s) is not a %s in its exact form; the session stays anonymous.",
                       type(user_id).__name__, field)
        return None
    return value


def _find_user(field, value, user_id):
    """Return the one user whose ``field`` is ``value`` exactly, or None (none, several, another form)."""
    from django.contrib.auth import get_user_model

    found = list(get_user_model()._default_manager.filter(**{field: value})[:2])
    if len(found) != 1:
        if found:
            logger.warning("Session userId matches several users by %r; the session stays anonymous.", field)
        return None
    stored = found[0].pk if field == "pk" else getattr(found[0], field)
    # A database may match loosely (a case-insensitive collation): the user's own value must be the one named.
    return found[0] if stored == value and str(stored) == str(user_id) else None


# Bearer tokens: a token is the key of a session made for it.

def engine_session_store():
    """Return SESSION_ENGINE's SessionStore class, or raise ImproperlyConfigured if it is not this engine's.

    A subclass (its own key prefix, salt...) in a project's engine module counts.
    """
    from importlib import import_module

    engine = conf.setting("SESSION_ENGINE")
    store = getattr(import_module(engine), "SessionStore", None)
    if not (isinstance(store, type) and issubclass(store, SessionStore)):
        raise CFKVConfigurationError(
            f"SESSION_ENGINE is {engine!r}, but bearer tokens are sessions in Workers KV: "
            "use 'django_cfkv.sessions' or an engine whose SessionStore subclasses django_cfkv.sessions.SessionStore.")
    return store


def token_store():
    """Return the store class for tokens: SESSION_ENGINE's when it is a KV engine, else this module's."""
    try:
        return engine_session_store()
    except CFKVConfigurationError:
        return SessionStore  # cookie sessions elsewhere; tokens still live in KV for Workers


def issue_token(request, user, *, max_age=None, backend=None):
    """Log ``user`` in on a new session, as login() does, and return its token.

    The token is the new session's key (165 bits from the OS CSPRNG). With
    ``max_age``, it ends ``max_age`` seconds after it is issued, however often
    it is used; without, it expires SESSION_COOKIE_AGE after its last use
    (sliding, as a cookie session does). ``request.session``
    (a cookie session, if any) is left alone; ``request.user`` becomes ``user``
    and ``user_logged_in`` is sent, as for login().
    """
    from django.contrib.auth.signals import user_logged_in

    session = token_store()()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = _backend_for(user, backend)
    if hasattr(user, "get_session_auth_hash"):
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if max_age is not None:
        session.set_expiry(max_age)
        session.set_absolute_expiry(max_age)
    session.create()
    if request is not None:
        request.user = user
    user_logged_in.send(sender=user.__class__, request=request, user=user)
    return session.session_key


def revoke_token(token):
    """Delete the session behind ``token`` (other Cloudflare locations may see it for up to ~60 s)."""
    if is_valid_key(token):
        store = token_store()
        try:
            store.get_kv().delete(store.kv_key(token))
        finally:
            _forget_nearby(store.kv_key(token))
        _recently_deleted.add(token)


def _backend_for(user, backend):
    """Return the backend path as login() chooses it."""
    backend = backend or getattr(user, "backend", None)
    if backend:
        return backend if isinstance(backend, str) else f"{backend.__module__}.{backend.__qualname__}"
    backends = conf.setting("AUTHENTICATION_BACKENDS")
    if len(backends) == 1:
        return backends[0]
    raise ValueError("You have multiple authentication backends configured: pass issue_token(backend=...) "
                     "or a user returned by authenticate().")
