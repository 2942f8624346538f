"""Bearer sessions; they live in :mod:`django_cfkv.sessions.bearer`, and these names stay importable here."""

from .sessions.bearer import (  # noqa: F401  (re-exported: they lived here)
    MALFORMED,
    BearerSessionMiddleware,
    bearer_token,
    invalid_token,
    unavailable,
)
