"""python -m django_cfkv.emulator: serve the KV REST API on loopback."""

import argparse
import sys

from .app import EmulatorApp
from .server import serve

DESCRIPTION = """\
Serve Cloudflare's Workers KV REST API over a local SQLite file, for
development, tests and benchmarks. Not a production server: no TLS, no real
accounts, one optional token. Point BASE_URL (or CLOUDFLARE_BASE_URL) at the
address it prints. Any account id is accepted and each namespace id is its own
namespace.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m django_cfkv.emulator", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    parser.add_argument("--path", default="cfkv-emulator.sqlite3", help="SQLite file holding the data")
    parser.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every call")
    parser.add_argument("--latency-ms", type=int, default=0, help="added latency per call, to model a network")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of calls answered 429")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on injected 429s (-1: none)")
    parser.add_argument("--rate-503", type=float, default=0.0, help="share of calls answered 503")
    parser.add_argument("--slow-rate", type=float, default=0.0, help="share of calls delayed by --slow-ms")
    parser.add_argument("--slow-ms", type=int, default=0, help="delay of slow calls")
    parser.add_argument("--enforce-quota", action="store_true",
                        help="answer 429 past 1,200 calls per 5 minutes, as Cloudflare does")
    parser.add_argument("--verbose", action="store_true",
                        help="log one line per request to stderr (keys and query values redacted)")
    args = parser.parse_args(argv)
    app = EmulatorApp(args.path, token=args.token, enforce_quota=args.enforce_quota,
                      latency_ms=args.latency_ms, rate_429=args.rate_429, retry_after=args.retry_after,
                      rate_503=args.rate_503, slow_rate=args.slow_rate, slow_ms=args.slow_ms)
    serve(app, args.host, args.port, verbose=args.verbose, on_ready=lambda server: print(
        f"cfkv emulator on {server.base_url} (data in {args.path}); Ctrl-C to stop", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
