"""The REST API's URLs: an account's, a namespace's, and a key as one path segment."""

import re
from urllib.parse import quote

from .. import limits

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")  # what quote() never encodes: such a key is its own encoding


def encode_key(key: str) -> str:
    """Percent-encode ``key`` for a URL path with nothing left safe, after validating it.

    Nothing is left safe (not even ``/``), so no key can reach another path.
    """
    key = limits.validate_key(key)  # refuses "." and "..", which are unreserved
    # A str subclass goes through quote(), which returns a plain str: its own __str__ never reaches a URL.
    return key if type(key) is str and _UNRESERVED.fullmatch(key) else quote(key, safe="")


def account_url(base_url: str, account_id: str) -> str:
    """Return the URL of an account's namespaces under ``base_url`` (given without a trailing slash)."""
    return f"{base_url}/accounts/{quote(str(account_id), safe='')}/storage/kv/namespaces"


def namespace_url(account: str, namespace_id: str) -> str:
    """Return the URL of one namespace under the account URL ``account``."""
    return f"{account}/{quote(str(namespace_id), safe='')}"
