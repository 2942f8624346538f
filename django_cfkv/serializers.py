"""The cache's entry codec under its earlier name; it lives in :mod:`django_cfkv.cache.codec`.

Kept so that ``from django_cfkv.serializers import decode_entry, SignatureError``
(and the rest of the codec's public names) goes on working.
"""

from .cache.codec import (
    MAX_INFLATED_BYTES,
    SERIALIZERS,
    SIGNATURE_SALT,
    DecodedEntry,
    Entry,
    EntryCodec,
    SignatureError,
    decode_entry,
    load_entry,
    parse_fields,
    retime,
    sign,
    verified_body,
)

__all__ = [
    "MAX_INFLATED_BYTES", "SERIALIZERS", "SIGNATURE_SALT", "DecodedEntry", "Entry", "EntryCodec", "SignatureError",
    "decode_entry", "load_entry", "parse_fields", "retime", "sign", "verified_body",
]
