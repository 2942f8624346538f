"""Django's cache on a Workers KV namespace: ``CACHES = {"default": {"BACKEND":
"django_cfkv.cache.CloudflareKVCache", "LOCATION": "<CFKV alias>"}}``.

What KV allows, and so what this backend can promise:

* Exact expiry. KV's TTL floor is 60 s, so each entry carries its exact expiry
  (see :mod:`django_cfkv.cache.codec`) and every read checks it; KV gets a TTL of
  at least 60 s only to clean up.
* No atomic operations. ``add``, ``incr``, ``decr`` and ``touch`` read, then
  write. A per-key lock makes them safe between threads of one process; between
  processes or locations a concurrent writer can win and an update can be lost.
  KV also takes at most one write per second per key.
* Eventual consistency. Other Cloudflare locations may read a value up to ~60 s
  old, so ``delete()`` is not an instant global invalidation.
* Anyone who can write the namespace can write any bytes under a cache key.
  Pickled entries are signed with SECRET_KEY and bound to their KV key, and a
  pickle cache reads nothing else (see :mod:`django_cfkv.cache.codec`), so such
  a writer can delete or replay entries but never plant a value or run code.
* Near cache (``OPTIONS["NEAR_CACHE_TIMEOUT"]``, off by default): reads kept in
  this process's memory for that many seconds (see :mod:`django_cfkv.nearcache`).
  This process's own writes invalidate at once; other processes' writes are
  seen only once the entry ages out, on top of KV's own staleness.

Where each part lives:

==============  ==============================================================
``backend``     CloudflareKVCache: Django's cache API (the facade)
``aio``         its async methods (aget, aset...), the blocking ones' twins
``base``        what both share: keys, expiries, read-modify-write plans
``extras``      django-redis' extra methods (ttl, expire, keys, delete_pattern...)
``options``     OPTIONS: defaults and checks
``keys``        Django key -> KV key (prefixes, escaping, HASH_LONG_KEYS)
``entries``     reading, decoding and writing one cache's entries; near cache
``codec``       the stored entry: JSON text, pickle signing, compression
``failures``    IGNORE_EXCEPTIONS: what it hides, logged
``stampede``    one computation per process, early recomputation (XFetch)
``patterns``    glob patterns on user keys (keys, iter_keys, delete_pattern)
``decorator``   ``@cached``
==============  ==============================================================
"""

from .backend import CloudflareKVCache
from .codec import SignatureError, decode_entry
from .decorator import cached
from .options import OPTION_DEFAULTS
from .stampede import stampede_events

__all__ = ["OPTION_DEFAULTS", "CloudflareKVCache", "SignatureError", "cached", "decode_entry", "stampede_events"]
