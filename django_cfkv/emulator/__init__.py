"""A loopback emulator of Cloudflare's Workers KV REST API, over LocalKV.

For development, tests and benchmarks only: it has no TLS, no real accounts
and no access control beyond one optional bearer token. Not a production server.
"""

from .app import EmulatorApp
from .server import serve, start_in_thread

__all__ = ["EmulatorApp", "serve", "start_in_thread"]
