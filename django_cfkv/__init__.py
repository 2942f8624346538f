"""django-cfkv: Cloudflare Workers KV behind Django's cache, sessions and rate limiting."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import django_cfkv.types

__version__ = "0.1.0"


def get_kv(alias: str = "default") -> "django_cfkv.types.KV":
    """Return the KV namespace object for a ``CFKV`` alias (shared within the process)."""
    from .conf import get_kv as _get_kv

    return _get_kv(alias)


async def aget_kv(alias: str = "default") -> "django_cfkv.types.KV":
    """As :func:`get_kv`, from async code (a first use builds the object in a worker thread)."""
    from .conf import aget_kv as _aget_kv

    return await _aget_kv(alias)


__all__ = ["aget_kv", "get_kv", "__version__"]
