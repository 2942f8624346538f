"""The error tree.

Every failure talking to KV is a :class:`KVError`. Configuration mistakes are
:class:`CFKVConfigurationError`, a Django ``ImproperlyConfigured`` that sits
outside the tree so that options such as ``IGNORE_EXCEPTIONS`` can never hide
them.
"""

from typing import Any

from django.core.exceptions import ImproperlyConfigured, PermissionDenied

from .text import one_line

RAY_ID_MAX = 64  # Cloudflare's are about 20 characters


class KVError(Exception):
    """Base class for every failure talking to Workers KV."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[dict[str, Any]] | None = None,
                 ray_id: str | None = None, result: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = list(errors or [])
        # The answer's cf-ray header, as any server sent it: shown in the text, so one line, cut short.
        self.ray_id = None if ray_id is None else one_line(ray_id[:RAY_ID_MAX])
        # The envelope's "result" on an error (a bulk call's unsuccessful_keys). The response
        # itself is not kept: its request carries the API token, and exceptions get pickled.
        self.result = result

    @property
    def codes(self) -> list[Any]:
        """Return Cloudflare's error codes carried by this error."""
        return [e.get("code") for e in self.errors if isinstance(e, dict)]

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        if self.ray_id:
            parts.append(f"[cf-ray {self.ray_id}]")
        if self.__cause__ is not None and not isinstance(self.__cause__, KVError):
            parts.append(f"caused by {type(self.__cause__).__name__}: {self.__cause__}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class KVConnectionError(KVError):
    """The API could not be reached (DNS, TCP, TLS, reset). Retryable."""


class KVTimeout(KVConnectionError):
    """A connect or read timeout. Retryable."""


class KVAPIError(KVError):
    """The API answered with an error status or a ``success: false`` envelope."""


class KVAuthError(KVAPIError):
    """401/403: the token is wrong or lacks a permission. Never retried."""


class KVNotFoundError(KVAPIError):
    """A 404 that is not a plain key miss: wrong account, namespace or route."""


class KVRateLimitError(KVAPIError):
    """429: Cloudflare's API rate limit (or KV's one-write-per-second-per-key).

    ``account_wide`` is True only when Cloudflare said every call of the account
    is refused (the REST quota is spent) for ``retry_after`` seconds; otherwise
    the 429 is about this one call or key, and other calls may go on.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, account_wide: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.account_wide = account_wide


class KVMalformedResponseError(KVAPIError):
    """An answer no Workers KV gives: not JSON where JSON is due, the wrong shape, larger
    than KV can hold, or a listing that does not move on. Like a 5xx, it says the
    server (or whatever answers in BASE_URL's place) is broken."""


class KVBulkError(KVAPIError):
    """A bulk write or delete left some keys undone; ``.keys`` names them.

    ``partial`` is True when the API answered and named the keys it could not
    do (``unsuccessful_keys``); False when a call failed as a whole (its cause
    is chained), in which case ``.keys`` are that call's keys and all later ones.
    """

    def __init__(self, message: str, *, keys: Any = (), partial: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.keys = list(keys)
        self.partial = partial


class KVValueError(KVError, ValueError):
    """A key, value, metadata or TTL breaks KV's limits. Raised before any I/O.

    ``code`` is the error code Cloudflare's API gives for the same refusal
    (10047 invalid metadata, 10034 invalid expiration_ttl...; None when it has
    none), and ``too_large`` says the refusal is about size (Cloudflare then
    answers 413): the emulator answers from these, never from the text.
    """

    def __init__(self, message: str, *, code: int | None = None, too_large: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.code = code
        self.too_large = too_large


class CFKVConfigurationError(ImproperlyConfigured):
    """A django-cfkv setting or option is missing or wrong: the one configuration error.

    ``id`` is the system check id that reports the mistake (``django_cfkv.E104``),
    ``hint`` says how to fix it; :mod:`django_cfkv.checks` turns both into an
    ``Error``. Its text is ``message`` alone.
    """

    def __init__(self, message: str, id: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.id = id
        self.hint = hint


class Ratelimited(PermissionDenied):
    """Raised by :func:`django_cfkv.ratelimit.ratelimit` when a view is over its rate."""

    def __init__(self, *args: Any, usage: Any = None) -> None:
        super().__init__(*args)
        self.usage = usage
