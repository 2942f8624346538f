"""Status -> exception: the one KVError that fits an error answer.

No I/O. Advice in the text says what to fix (which setting, which token), and a
key the call named never appears in it (see ``answer.error_items``).
"""

from typing import Any

from ..exceptions import KVAPIError, KVAuthError, KVError, KVNotFoundError, KVRateLimitError
from ..transport.quota import account_block, parse_retry_after
from .answer import Answer, decoded, describe, error_items
from .request import KVRequest

KEY_NOT_FOUND = 10009
TOKEN_PERMISSION = "Workers KV Storage Read/Write"


def error_for(response: Answer, call: KVRequest) -> KVError:
    """Map an error answer (status >= 300) to the one exception class that fits it."""
    status = response.status_code
    try:
        body = decoded(response)
    except ValueError:
        body = None
    errors = error_items(body, call.keys)
    result = body.get("result") if isinstance(body, dict) else None
    kwargs: dict[str, Any] = {"status": status, "errors": errors, "ray_id": response.headers.get("cf-ray"),
                              "result": result}
    detail = describe(errors)
    if status in (401, 403):
        return KVAuthError(auth_advice(response.headers.get("WWW-Authenticate", ""), detail), **kwargs)
    if status == 404:
        if any(e.get("code") == KEY_NOT_FOUND for e in errors):
            return KVNotFoundError(f"Key not found ({detail}).", **kwargs)
        return KVNotFoundError(
            f"Workers KV found no such namespace or route ({detail}). Check ACCOUNT_ID, "
            "NAMESPACE_ID and BASE_URL.", **kwargs)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return KVRateLimitError(
            f"Cloudflare's rate limit was hit ({detail}): 1,200 API calls per 5 minutes per user, "
            "or one write per second to the same key"
            + (f"; retry after {retry_after:.0f} s." if retry_after is not None else "."),
            retry_after=retry_after, account_wide=account_block(status, response.headers) > 0, **kwargs)
    if status >= 500:
        return KVAPIError(f"Workers KV failed with a server error ({detail}).", **kwargs)
    return KVAPIError(f"Workers KV refused the request ({detail}).", **kwargs)


def is_key_miss(error: KVError) -> bool:
    """Return True if ``error`` says the key does not exist (404, code 10009): not an error for a read."""
    return isinstance(error, KVNotFoundError) and KEY_NOT_FOUND in error.codes


def auth_advice(challenge: str, detail: str) -> str:
    """Say which token to fix: the Worker gateway names itself in its challenge."""
    if 'realm="django-cfkv-gateway"' not in challenge:
        return (f"Cloudflare refused the API token ({detail}). Check API_TOKEN and that it has the "
                f"'{TOKEN_PERMISSION}' permission for this account.")
    if "insufficient_scope" in challenge:
        return (f"The django-cfkv gateway refused a write ({detail}): API_TOKEN is its read-only token. "
                "Writes need the value of the gateway's CFKV_GATEWAY_TOKEN secret.")
    return (f"The django-cfkv gateway refused the token ({detail}). Set API_TOKEN to the value of the "
            "gateway's CFKV_GATEWAY_TOKEN secret (or CFKV_GATEWAY_READ_TOKEN, for reads only).")
