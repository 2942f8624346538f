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
  GET) and is never written back (``state.State`` names what a store knows).
  A logout elsewhere may take up to ~60 s to be seen here (KV's caches), so no
  check can make this exact: it only narrows the window.
* Near cache (off by default). With ``SESSION_CFKV_NEAR_CACHE_TIMEOUT``
  seconds > 0, a session read from KV is kept in this process's memory that
  long, so repeated requests skip the GET. A flush, delete or cycle_key in
  this process forgets it at once; a logout in ANOTHER process is seen by
  loads here only after up to that many seconds, but a write (an expiry
  refresh included) checks KV first, so it never brings such a session back.
* One write per second per key. ``cycle_key()`` reserves the new key without
  writing it (the next ``save()`` writes once), and a session's stored expiry
  moves at most once per ``SESSION_CFKV_REFRESH_INTERVAL`` (a change of data
  alone keeps it).
* No way to find a user's sessions but a listing. Each signed-in session has
  an entry in its user's own index (``index``), so user_sessions() and the
  revoke_*() functions list one short prefix, never the namespace.

The package, one job a module (each imports only those below it):

* ``views``    the "Your sessions" page (``include("django_cfkv.urls")``)
* ``middleware`` SessionMiddleware: Django's, saving the session awaited in an async stack
* ``bearer``   BearerSessionMiddleware: ``Authorization: Bearer`` selects a session
* ``value_change`` a user's index follows a change of their SESSION_CFKV_USER_FIELD value (save signals)
* ``per_user`` a user's sessions: user_sessions(), revoke_session(), revoke_other_sessions(), revoke_all_sessions()
* ``tokens``   issue_token() and revoke_token() (and their ``a`` twins): a token is the key of a session made for it
* ``clients``  the client a session is signed in from (device, location), noted at sign-in
* ``store``    SessionStore: save, delete, cycle_key, clear_expired
* ``reading``  SessionStore's base, SessionReader: key names, new keys, load, exists
* ``entries``  a session's entry in its user's index, kept in step with the session by the store
* ``state``    what a store knows of its session's copy in KV (State), which save() decides by
* ``users``    a Worker's ``userId`` <-> Django's ``_auth_user_id``
* ``codec``    the stored value: both formats, parsing, the canonical form
* ``index``    the index of a user's sessions: key names, what an entry records (UserSession)
* ``memory``   this process's memory: sessions it deleted in the last minute, the near cache
* ``keys``     session ids and the KV key names that hold them (hashed or plain)
* ``plans``    each operation's calls written once, followed blocking (load) or awaited (aload)
* ``options``  the engine's settings, checked where they are used
"""

from .codec import decode_value
from .index import UserSession, user_index_key
from .keys import KEY_LENGTH, hashed_id, is_valid_key
from .options import FORMATS, LAYOUTS, ON_LOAD_ERROR_CHOICES, key_layout, session_format
from .per_user import (
    arevoke_all_sessions,
    arevoke_other_sessions,
    arevoke_session,
    auser_sessions,
    revoke_all_sessions,
    revoke_other_sessions,
    revoke_session,
    user_sessions,
)
from .store import SessionStore, logger, security_logger
from .tokens import aissue_token, arevoke_token, engine_session_store, issue_token, revoke_token, token_store
from .users import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, user_lookup_value

__all__ = [
    "BACKEND_SESSION_KEY", "FORMATS", "HASH_SESSION_KEY", "KEY_LENGTH", "LAYOUTS", "ON_LOAD_ERROR_CHOICES",
    "SESSION_KEY", "SessionStore", "UserSession", "aissue_token", "arevoke_all_sessions", "arevoke_other_sessions",
    "arevoke_session", "arevoke_token", "auser_sessions", "decode_value", "engine_session_store", "hashed_id",
    "is_valid_key", "issue_token", "key_layout", "logger", "revoke_all_sessions", "revoke_other_sessions",
    "revoke_session", "revoke_token", "security_logger", "session_format", "token_store", "user_index_key",
    "user_lookup_value", "user_sessions",
]
