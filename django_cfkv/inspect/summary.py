"""What a namespace adds up to: counts and sizes by kind, an expiry histogram, the largest keys."""

from collections.abc import Callable, Sequence
from typing import Any

from .. import clock, limits
from ..exceptions import KVAPIError, KVValueError
from ..metadata import read as read_metadata
from ..types import KV
from .entries import EXPIRY_BUCKETS, KINDS, display_key, exact_expiry, expiry_bucket, kind_of, list_entries

_SINGLE_READS_UPTO = 4  # a refused bulk read of this many keys or fewer is redone key by key


def read_values(kv: KV, names: Sequence[str]) -> dict[str, bytes]:
    """Return {name: bytes} for those of ``names`` that exist.

    Bulk reads of 100 keys. KV's bulk read refuses a chunk holding a binary
    value, so a refused chunk is halved and retried until the binary values
    are read one by one: one binary value among 100 costs about 10 more bulk
    reads and at most 4 single reads, rather than 100 single reads.
    """
    found: dict[str, bytes] = {}
    pending = [names[i:i + limits.BULK_GET_MAX_KEYS] for i in range(0, len(names), limits.BULK_GET_MAX_KEYS)]
    while pending:
        chunk = pending.pop()
        try:
            found.update(kv.get_many(chunk))
        except (KVAPIError, KVValueError):
            if len(chunk) > _SINGLE_READS_UPTO:
                half = (len(chunk) + 1) // 2
                pending += [chunk[half:], chunk[:half]]
                continue
            for name in chunk:
                value = kv.get(name)
                if value is not None:
                    found[name] = value
    return found


def summarize(kv: KV, prefix: str | None = None, *, read_sizes: bool = False, largest: int = 10,
              now: float | None = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Return counts and sizes by kind, an expiry histogram and the largest keys.

    Costs ceil(n/1000) list calls. Sizes come from a metadata ``"size"`` where
    writers record one; with ``read_sizes`` the other values are read too
    (ceil(m/100) bulk reads, and a few more where binary values sit; see
    :func:`read_values`).
    ``bytes_known`` says for how many keys of each kind the size is known.
    """
    now = clock.now() if now is None else now
    entries, _ = list_entries(kv, prefix, progress=progress)
    sizes = {e.name: read_metadata(e.metadata).size for e in entries}
    if read_sizes:
        unknown = [name for name, size in sizes.items() if size is None]
        sizes.update((name, len(value)) for name, value in read_values(kv, unknown).items())
    kinds = {kind: {"count": 0, "bytes": 0, "bytes_known": 0} for kind in KINDS}
    expiry = dict.fromkeys(EXPIRY_BUCKETS, 0)
    for entry in entries:
        kind = kinds[kind_of(entry.name, entry.metadata)]
        kind["count"] += 1
        size = sizes.get(entry.name)
        if size is not None:
            kind["bytes"] += size
            kind["bytes_known"] += 1
        expiry[expiry_bucket(exact_expiry(entry), now)] += 1
    sized = sorted((e for e in entries if sizes.get(e.name) is not None),
                   key=lambda e: (-(sizes[e.name] or 0), e.name))
    return {
        "prefix": prefix,
        "generated_at": now,
        "keys": len(entries),
        "kinds": kinds,
        "expiry": expiry,
        "largest": [{"key": display_key(e.name, e.metadata), "kind": kind_of(e.name, e.metadata),
                     "bytes": sizes[e.name]}
                    for e in sized[:largest]],
        "sizes_read": read_sizes,
    }
