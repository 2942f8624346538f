"""The REST client: ``KVClient`` over Cloudflare's Workers KV API. Knows no Django.

One job per module. All but ``sync`` and ``aio`` do no I/O, so any way of sending shares them:

- ``urls``      the account's and the namespace's URLs; a key as one percent-encoded path segment
- ``request``   what each call sends: a ``KVRequest`` per operation, input checked against KV's limits
- ``bulk``      bulk items cut into calls within KV's limits; the error naming every key not done
- ``answer``    what comes back: the JSON envelope, each call's result checked for its shape
- ``errors``    status -> exception, with advice on what to fix
- ``plans``     each operation as the calls it makes and what it makes of their answers, for both clients
- ``sync``      ``KVClient``: sends each call through :mod:`django_cfkv.transport` and reads its answer
- ``aio``       ``KVClient``'s async twins (``aget``, ``aput``...): the same plans, awaited
"""

from .errors import KEY_NOT_FOUND, TOKEN_PERMISSION
from .sync import KVClient
from .urls import DEFAULT_BASE_URL, encode_key

__all__ = ["DEFAULT_BASE_URL", "KEY_NOT_FOUND", "TOKEN_PERMISSION", "KVClient", "encode_key"]
