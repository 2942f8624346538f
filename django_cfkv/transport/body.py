"""The capped body readers: an answer larger than any KV can give is refused while it streams, never read whole.

One per HTTP library, each a loop over the chunks it gives; what to keep and when to stop
is :class:`~django_cfkv.transport.exchange.Capped`'s, for both.
"""

from typing import Any

from .exchange import CHUNK_BYTES, Attempt, Capped, ResponseTooLargeError, read_whole

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
    if read_whole(response.headers, attempt.max_bytes):
        return await response.read()
    capped = Capped(attempt, response.status, response.headers)
    if not capped.unread:
        read = response.content.read  # what iter_chunked() awaits, without its iterator (less CPU per call)
        while chunk := await read(CHUNK_BYTES):
            if not capped.add(chunk):
                break
    return capped.body()
