"""The capped body reader: an answer larger than any KV can give is refused while it streams, never read whole."""

from typing import Any

from ..exceptions import KVMalformedResponseError
from .logs import where

CHUNK_BYTES = 64 * 1024


class ResponseTooLargeError(KVMalformedResponseError):
    """An answer larger than any Workers KV can give (it was not read whole)."""


def read_body(response: Any, max_bytes: int, method: str, endpoint: str, url: str) -> bytes:
    """Return the body of a streamed requests.Response, read in chunks; refuse one over ``max_bytes``
    (by its Content-Length, or as it arrives) before holding it whole."""
    declared = response.headers.get("Content-Length", "")
    chunks, size = [], int(declared) if declared.isdigit() else 0
    if size <= max_bytes:
        size = 0
        for chunk in response.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                break
            chunks.append(chunk)
    if size > max_bytes:
        raise ResponseTooLargeError(
            f"Workers KV's answer to {where(method, endpoint, url)} is larger than any KV can give "
            f"({max_bytes} bytes), so it was not read. Check BASE_URL.", status=response.status_code)
    return b"".join(chunks)
