"""The capped body readers: an answer larger than any KV can give is refused while it streams, never read whole.

One per HTTP library, each a loop over the chunks it gives; what to keep and when to stop
is :class:`~django_cfkv.transport.exchange.Capped`'s, for both.
"""

from typing import Any

from .. import limits
from .exchange import CHUNK_BYTES, Attempt, Capped, ResponseTooLargeError

__all__ = ["CHUNK_BYTES", "ResponseTooLargeError", "aread_body", "read_body"]


def read_body(response: Any, attempt: Attempt) -> bytes:
    """Return the body of a streamed requests.Response, or raise ResponseTooLargeError."""
    capped = Capped(attempt, response.status_code, response.headers)
    if not capped.unread:
        for chunk in response.iter_content(CHUNK_BYTES):
            if not capped.add(chunk):
                break
    return capped.body()


async def aread_body(response: Any, attempt: Attempt) -> bytes:
    """Return the body of an aiohttp ClientResponse, or raise ResponseTooLargeError."""
    headers = response.headers
    # A declared length within the cap, and no encoding to inflate it: an HTTP parser reads no more than that
    # length, so the body is read whole, with no Capped reader made.
    declared = limits.parse_digits(headers.get("Content-Length", ""), 18)  # the upstream's text
    if declared is not None and declared <= attempt.max_bytes and "Content-Encoding" not in headers:
        return await response.read()
    capped = Capped(attempt, response.status, headers)
    if not capped.unread:
        read = response.content.read  # what iter_chunked() awaits, without its iterator (less CPU per call)
        while chunk := await read(CHUNK_BYTES):
            if not capped.add(chunk):
                break
    return capped.body()
