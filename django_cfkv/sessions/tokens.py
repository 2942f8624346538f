"""Bearer tokens: a token is the key of a session made for it, issued as login() logs a user in."""

from importlib import import_module
from typing import Any, cast

from django.http import HttpRequest

from .. import conf
from ..exceptions import CFKVConfigurationError
from ..ratelimit.identity import set_request_user
from .clients import aclient_of, client_of
from .keys import is_valid_key
from .store import SessionStore
from .users import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY


def engine_session_store() -> type[SessionStore]:
    """Return SESSION_ENGINE's SessionStore class, or raise ImproperlyConfigured if it is not this engine's.

    A subclass (its own key prefix, salt...) in a project's engine module counts.
    """
    engine = conf.setting("SESSION_ENGINE")
    store = getattr(import_module(engine), "SessionStore", None)
    if not (isinstance(store, type) and issubclass(store, SessionStore)):
        raise CFKVConfigurationError(
            f"SESSION_ENGINE is {engine!r}, but bearer tokens are sessions in Workers KV: "
            "use 'django_cfkv.sessions' or an engine whose SessionStore subclasses django_cfkv.sessions.SessionStore.")
    return store


def token_store() -> type[SessionStore]:
    """Return the store class for tokens: SESSION_ENGINE's when it is a KV engine, else this package's."""
    try:
        return engine_session_store()
    except CFKVConfigurationError:
        return SessionStore  # cookie sessions elsewhere; tokens still live in KV for Workers


def issue_token(request: HttpRequest | None, user: Any, *, max_age: int | None = None,
                backend: str | type | None = None) -> str:
    """Log ``user`` in on a new session, as login() does, and return its token.

    The token is the new session's key (165 bits from the OS CSPRNG). With
    ``max_age``, it ends ``max_age`` seconds after it is issued, however often
    it is used; without, it expires SESSION_COOKIE_AGE after its last use
    (sliding, as a cookie session does). ``request.session``
    (a cookie session, if any) is left alone; ``request.user`` becomes ``user``
    and ``user_logged_in`` is sent, as for login().
    """
    from django.contrib.auth.signals import user_logged_in

    session = _token_session(user, max_age, backend, client_of(request, "bearer"))
    session.create()
    set_request_user(request, user)
    user_logged_in.send(sender=user.__class__, request=request, user=user)
    return cast(str, session.session_key)  # create() drew it


async def aissue_token(request: HttpRequest | None, user: Any, *, max_age: int | None = None,
                       backend: str | type | None = None) -> str:
    """The async twin of :func:`issue_token`, as alogin() is login()'s: the session is written awaiting KV,
    and ``user_logged_in`` is sent with ``asend()`` (a blocking receiver, such as Django's own that saves
    ``last_login``, runs in a thread, as Django runs it)."""
    from django.contrib.auth.signals import user_logged_in

    session = _token_session(user, max_age, backend, await aclient_of(request, "bearer"))
    await session.acreate()
    set_request_user(request, user)
    await user_logged_in.asend(sender=user.__class__, request=request, user=user)
    return cast(str, session.session_key)


def revoke_token(token: str) -> None:
    """Delete the session behind ``token`` (other Cloudflare locations may see it for up to ~60 s)."""
    if is_valid_key(token):
        token_store()().delete(token)


async def arevoke_token(token: str) -> None:
    """The async twin of :func:`revoke_token`: the session is deleted awaiting KV."""
    if is_valid_key(token):
        await token_store()().adelete(token)


def _token_session(user: Any, max_age: int | None, backend: str | type | None,
                   client: dict[str, str]) -> SessionStore:
    """Return the new (unsaved) session a token for ``user`` names, as login() fills one, signed in from ``client``."""
    session = token_store()()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = _backend_for(user, backend)
    if hasattr(user, "get_session_auth_hash"):
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if max_age is not None:
        session.set_expiry(max_age)
        session.set_absolute_expiry(max_age)
    session.keep_key = True  # a token's key is what its client holds
    session.note_client(client)
    return session


def _backend_for(user: Any, backend: str | type | None) -> str:
    """Return the backend path as login() chooses it."""
    backend = backend or getattr(user, "backend", None)
    if backend:
        return backend if isinstance(backend, str) else f"{backend.__module__}.{backend.__qualname__}"
    backends: list[str] = conf.setting("AUTHENTICATION_BACKENDS")
    if len(backends) == 1:
        return backends[0]
    raise ValueError("You have multiple authentication backends configured: pass issue_token(backend=...) "
                     "or a user returned by authenticate().")
