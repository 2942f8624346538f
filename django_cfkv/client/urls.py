"""The REST API's URLs: an account's, a namespace's, and a key as one path segment."""

from urllib.parse import quote

from .. import limits

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"


def encode_key(key: str) -> str:
    """Percent-encode ``key`` for a URL path with nothing left safe, after validating it.

    Nothing is left safe (not even ``/``), so no key can reach another path.
    """
    return quote(limits.validate_key(key), safe="")


def account_url(base_url: str, account_id: str) -> str:
    """Return the URL of an account's namespaces under ``base_url`` (given without a trailing slash)."""
    return f"{base_url}/accounts/{quote(str(account_id), safe='')}/storage/kv/namespaces"


def namespace_url(account: str, namespace_id: str) -> str:
    """Return the URL of one namespace under the account URL ``account``."""
    return f"{account}/{quote(str(namespace_id), safe='')}"
