"""Operator views of a namespace: what is stored, how it decodes, what it adds up to.

``manage.py cfkv ls/get/stats`` are thin shells over these functions, and a
staff page can call :func:`summarize` to show the same figures with the same
code. Sweeping and pinging are in :mod:`django_cfkv.maintenance`.

Everything works from listings (name, KV expiry, metadata: 1 API call per
1,000 keys) and reads values only where it must. Kinds come from the metadata
convention ``{"kind": "cache"|"session"|"ratelimit", "expires": <epoch>}``,
else from key prefixes. Values are decoded by the cache, session and limiter
modules' own decoders when they are installed, else generically (JSON, text,
bytes).

Nothing here prints a usable session id: in the plain key layout a session's
key name is its id, so such names are shown cut short (:func:`display_key`).

Modules: :mod:`.entries` (kinds, expiries, listing), :mod:`.decoding` (values
as their kind's decoder reads them), :mod:`.summary` (counts, sizes, the largest keys).
"""

from .decoding import DECODERS, decode, decode_generic, decoder_for, jsonable
from .entries import (
    EXPIRY_BUCKETS,
    KINDS,
    RATELIMIT_PREFIX,
    SWEEP_KINDS,
    describe,
    display_key,
    exact_expiry,
    expiry_bucket,
    kind_of,
    list_entries,
)
from .summary import read_values, summarize

__all__ = [
    "DECODERS", "EXPIRY_BUCKETS", "KINDS", "RATELIMIT_PREFIX", "SWEEP_KINDS", "decode", "decode_generic",
    "decoder_for", "describe", "display_key", "exact_expiry", "expiry_bucket", "jsonable", "kind_of",
    "list_entries", "read_values", "summarize",
]
