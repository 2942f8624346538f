"""manage.py cfkv: look at, change and tidy a Workers KV namespace.

A thin shell: listing, decoding, summaries, sweeping and pinging live in
:mod:`django_cfkv.inspect`; this module parses options and prints.
"""

import json
import sys
from datetime import datetime, timezone

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from ... import clock, conf, get_kv, inspect, maintenance, transport
from ...exceptions import KVBulkError, KVConnectionError, KVError, KVRateLimitError
from ...types import KeyInfo

READ_ONLY = ("ls", "get", "stats", "ping", "sweep")


class Command(BaseCommand):
    help = "Inspect and maintain a Cloudflare Workers KV namespace (a CFKV alias)."
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        def command(name, help_text):
            p = sub.add_parser(name, help=help_text, description=help_text)
            p.add_argument("--alias", default="default", help='CFKV alias (default "default")')
            if name in READ_ONLY:
                p.add_argument("--json", action="store_true", help="print JSON (schema in the README)")
            return p

        p = command("ls", "List keys with their expiry and metadata.")
        p.add_argument("--prefix", help="only keys starting with this")
        p.add_argument("--limit", type=int, help="show at most N keys (default: all)")

        p = command("get", "Show a value, decoded as far as possible, with its expiry.")
        p.add_argument("key")
        p.add_argument("--raw", action="store_true", help="write the stored bytes to stdout unchanged")

        p = command("put", "Store a value.")
        p.add_argument("key")
        p.add_argument("value", nargs="?", help="the value as text (or use --file)")
        p.add_argument("--file", help="read the value from this file ('-' for stdin), byte for byte")
        p.add_argument("--ttl", type=int, help="expire after S seconds (KV's minimum is 60)")
        p.add_argument("--metadata", help="metadata as JSON (at most 1024 bytes)")

        p = command("rm", "Delete keys, or every key with a prefix.")
        p.add_argument("keys", nargs="*", metavar="KEY")
        p.add_argument("--prefix", help="delete every key starting with this")
        p.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
        p.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")

        p = command("stats", "Count keys and sizes by kind; expiry histogram; largest keys.")
        p.add_argument("--prefix", help="only keys starting with this")
        p.add_argument("--sizes", action="store_true",
                       help="read values whose size the metadata does not record (about 1 call per 100 keys)")
        p.add_argument("--top", type=int, default=10, help="how many largest keys to show (default 10)")

        p = command("sweep", "Delete entries past their own expiry that KV has not removed yet.")
        p.add_argument("--dry-run", action="store_true", help="count only; delete nothing")
        p.add_argument("--kind", choices=["sessions", "cache", "ratelimit", "all"], default="all")

        # Sessions live in SESSION_CFKV_ALIAS: no --alias to get wrong.
        help_text = ("Move sessions stored under their ids (the plain key layout, the only one before "
                     "SESSION_CFKV_KEY_LAYOUT) to hashed keys.")
        p = sub.add_parser("migrate-sessions", help=help_text, description=help_text)
        p.add_argument("--drop", action="store_true", help="delete them instead: their users sign in again")
        p.add_argument("--dry-run", action="store_true", help="count only; change nothing")
        p.add_argument("--json", action="store_true", help="print JSON")

        p = command("ping", "Check the token and namespace; show latency and the API budget left.")
        p.add_argument("--read-only", action="store_true", help="no probe write: one list call only")

        p = command("serve", "Run the KV REST API emulator on loopback (development and tests only).")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8787)
        p.add_argument("--path", default="cfkv-emulator.sqlite3", help="SQLite file holding the data")
        p.add_argument("--token", help="require 'Authorization: Bearer TOKEN'")

        gateway = sub.add_parser("gateway", help="The Worker gateway.").add_subparsers(
            dest="gateway_command", required=True, metavar="ACTION")
        p = gateway.add_parser("init", help="Write a wrangler project for the Worker gateway into DIR.")
        p.add_argument("directory", metavar="DIR")
        p.add_argument("--alias", default="default", help="CFKV alias whose NAMESPACE_ID is the default")
        p.add_argument("--namespace-id", help="the KV namespace id (default: the alias' NAMESPACE_ID)")
        p.add_argument("--name", default="cfkv-gateway", help="Worker name (default cfkv-gateway)")
        p.add_argument("--force", action="store_true", help="overwrite existing files")

    def handle(self, *args, **options):
        name = options["subcommand"]
        if name == "gateway":
            name = "gateway_" + options["gateway_command"]
        self.alias = options.get("alias") or conf.setting("SESSION_CFKV_ALIAS")
        self.stdin = options.get("stdin") or sys.stdin
        self._progress_shown = False
        try:
            getattr(self, "handle_" + name.replace("-", "_"))(options)
        except KeyboardInterrupt:
            raise CommandError("Interrupted. Nothing is left half-done: run the command again to finish.")
        except (KVError, ImproperlyConfigured) as exc:
            raise CommandError(self._scrub(self._explain(exc)))
        finally:
            if self._progress_shown:  # end the progress line
                self.stderr.write("")

    # Subcommands

    def handle_ls(self, options):
        limit = options["limit"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        entries, more = inspect.list_entries(self.kv, options["prefix"], limit, self._progress("listed"))
        now = clock.now()
        rows = [inspect.describe(info, now) for info in entries]
        if options["json"]:
            return self._json({"alias": self.alias, "prefix": options["prefix"], "keys": rows, "more": more})
        width = min(72, max([len(r["key"]) for r in rows] + [3]))  # 72: a hashed session key
        self.stdout.write(f"{'KEY':<{width}}  {'KIND':<9}  {'EXPIRES':<40}  METADATA")
        for r in rows:
            meta = "" if r["metadata"] is None else json.dumps(r["metadata"], separators=(",", ":"))
            self.stdout.write(f"{r['key']:<{width}}  {r['kind']:<9}  {when(r['expires'], now):<40}  {meta}".rstrip())
        tail = "; more not shown (raise --limit)" if more else ""
        self.stdout.write(f"{len(rows)} key{'' if len(rows) == 1 else 's'}{tail}")

    def handle_get(self, options):
        key = options["key"]
        if options["raw"] and options["json"]:
            raise CommandError("Use --raw or --json, not both.")
        entry = self.kv.get_with_metadata(key)
        if entry is None:
            raise CommandError(f"No key {inspect.display_key(key)!r} in CFKV alias {self.alias!r}.")
        if options["raw"]:
            return self._write_bytes(entry.value)
        info = KeyInfo(key, entry.expiration, entry.metadata)
        result = {**inspect.describe(info), **inspect.decode(key, entry.value, entry.metadata),
                  "size": len(entry.value)}
        if options["json"]:
            return self._json(result)
        how = result["format"] if result["decoder"] == "generic" else f"decoded by {result['decoder']}"
        now = clock.now()
        self.stdout.write(f"key:       {result['key']}")
        self.stdout.write(f"kind:      {result['kind']} ({how})")
        self.stdout.write(f"expires:   {when(result['expires'], now)}"
                          + ("  [expired: readers treat it as missing]" if result["expired"] else ""))
        if result["kv_expiration"] != result["expires"]:
            self.stdout.write(f"KV expiry: {when(result['kv_expiration'], now)}")
        value_expires = result["value_expires"]
        if value_expires is not None and abs(value_expires - (result["expires"] or 0)) > 1:
            self.stdout.write(f"in value:  {when(value_expires, now)}")
        self.stdout.write(f"metadata:  {json.dumps(result['metadata'])}")
        self.stdout.write(f"size:      {result['size']} bytes")
        value = result["value"]
        if result["format"] == "bytes":
            self.stdout.write("value (binary, base64; use --raw for the bytes):")
        else:
            self.stdout.write("value:")
        text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        self.stdout.write(text)

    def handle_put(self, options):
        value, path = options["value"], options["file"]
        if (value is None) == (path is None):
            raise CommandError("Give the value as an argument or with --file (one of the two).")
        if path is not None:
            try:
                value = self.stdin.buffer.read() if path == "-" else open(path, "rb").read()
            except OSError as exc:
                raise CommandError(f"Cannot read {path}: {exc.strerror}.")
        metadata = None
        if options["metadata"] is not None:
            try:
                metadata = json.loads(options["metadata"])
            except ValueError as exc:
                raise CommandError(f"--metadata is not valid JSON ({exc}); e.g. --metadata '{{\"v\": 1}}'.")
        self.kv.put(options["key"], value, expiration_ttl=options["ttl"], metadata=metadata)
        size = len(value.encode("utf-8") if isinstance(value, str) else value)
        ttl = f", expires in {span(options['ttl'])}" if options["ttl"] else ""
        self.stdout.write(f"Stored {options['key']!r} ({size} bytes{ttl}).")

    def handle_rm(self, options):
        keys, prefix = options["keys"], options["prefix"]
        if bool(keys) == (prefix is not None):
            raise CommandError("Name the keys to delete, or give --prefix (one of the two).")
        shown = [inspect.display_key(key) for key in keys]
        if prefix is not None:
            listed = inspect.list_entries(self.kv, prefix or None, progress=self._progress("listed"))[0]
            keys = [info.name for info in listed]
            shown = [inspect.display_key(info.name, info.metadata) for info in listed]
        what = f"{len(keys)} key{'' if len(keys) == 1 else 's'}"
        where = f"CFKV alias {self.alias!r}" + (f" with prefix {prefix!r}" if prefix else "")
        if options["dry_run"]:
            for key in shown:
                self.stdout.write(key)
            return self.stdout.write(f"Would delete {what} from {where}.")
        if not keys:
            return self.stdout.write(f"Nothing to delete from {where}.")
        if not options["yes"]:
            if not _isatty(self.stdin):
                raise CommandError(f"Refusing to delete {what} from {where} without --yes "
                                   "(stdin is not a terminal, so I cannot ask).")
            self.stdout.write(f"Delete {what} from {where}? [y/N] ", ending="")
            self.stdout.flush()
            if self.stdin.readline().strip().lower() not in ("y", "yes"):
                return self.stdout.write("Nothing deleted.")
        self.kv.delete_many(keys)
        self.stdout.write(f"Deleted {what} from {where}.")

    def handle_stats(self, options):
        before = transport.calls.snapshot()
        report = inspect.summarize(self.kv, options["prefix"], read_sizes=options["sizes"],
                                   largest=options["top"], progress=self._progress("listed"))
        report = {"alias": self.alias, **report, "api_calls": _calls_since(before)}
        if options["json"]:
            return self._json(report)
        self.stdout.write(f"{report['keys']} keys in CFKV alias {self.alias!r}"
                          + (f" with prefix {report['prefix']!r}" if report["prefix"] else ""))
        self.stdout.write(f"\n{'kind':<10} {'keys':>8} {'size':>10}")
        unknown = 0
        for kind, row in report["kinds"].items():
            missing = row["count"] - row["bytes_known"]
            unknown += missing
            note = f"  (size unknown for {missing})" if missing else ""
            size = "unknown" if row["count"] and not row["bytes_known"] else filesize(row["bytes"])
            self.stdout.write(f"{kind:<10} {row['count']:>8} {size:>10}{note}")
        if unknown and not report["sizes_read"]:
            self.stdout.write("Sizes not recorded in metadata are unknown: --sizes reads those values "
                              "(about 1 API call per 100 keys).")
        labels = {"expired": "expired, not yet removed", "lt_1h": "< 1 h", "lt_1d": "< 1 d",
                  "lt_7d": "< 7 d", "later": ">= 7 d", "never": "never"}
        self.stdout.write("\nexpires")
        for bucket, count in report["expiry"].items():
            self.stdout.write(f"  {labels[bucket]:<26} {count:>8}")
        if report["largest"]:
            self.stdout.write("\nlargest keys")
            for row in report["largest"]:
                self.stdout.write(f"  {filesize(row['bytes']):>10}  {row['kind']:<9}  {row['key']}")
        self._write_calls(report["api_calls"])

    def handle_sweep(self, options):
        kinds = inspect.SWEEP_KINDS if options["kind"] == "all" else (options["kind"],)
        before = transport.calls.snapshot()
        sweeper = maintenance.Sweep(self.kv, kinds, dry_run=options["dry_run"], progress=self._sweep_progress())
        try:
            report = sweeper.run()
        except (KeyboardInterrupt, KVError) as exc:
            self.stderr.write(f"Stopped after scanning {sweeper.scanned} keys, deleting {sweeper.deleted}.")
            raise exc
        report = {"alias": self.alias, "kinds": list(kinds), **report, "api_calls": _calls_since(before)}
        if options["json"]:
            return self._json(report)
        verb = "Would delete" if report["dry_run"] else "Deleted"
        count = report["found"] if report["dry_run"] else report["deleted"]
        self.stdout.write(f"Scanned {report['scanned']} keys. {verb} {count}:")
        for kind, counts in report["by_kind"].items():
            self.stdout.write(f"  {kind:<10} {counts['expired']:>8} expired {counts['orphaned']:>8} orphaned")
        if report["values_read"]:
            self.stdout.write(f"Read {report['values_read']} values that carry their expiry inside.")
        self._write_calls(report["api_calls"])

    def handle_migrate_sessions(self, options):
        from ...sessions import token_store

        before = transport.calls.snapshot()
        report = maintenance.move_plain_sessions(token_store(), drop=options["drop"], dry_run=options["dry_run"])
        report = {"alias": self.alias, **report, "api_calls": _calls_since(before)}
        if options["json"]:
            return self._json(report)
        found = f"{report['found']} session{'' if report['found'] == 1 else 's'} stored under their ids"
        self.stdout.write(f"Found {found} in CFKV alias {self.alias!r}.")
        if report["dry_run"]:
            verb = "delete" if report["drop"] else f"move {report['moved']} to hashed keys and delete"
            self.stdout.write(f"Would {verb} {report['found']} old keys.")
        elif report["found"]:
            moved = "" if report["drop"] else f"Moved {report['moved']} to hashed keys; "
            self.stdout.write(f"{moved}deleted {report['deleted']} old keys.")
        self._write_calls(report["api_calls"])

    def handle_ping(self, options):
        report = {"alias": self.alias, **maintenance.ping(self.kv, read_only=options["read_only"])}
        if options["json"]:
            return self._json(report)
        where = report["base_url"] or report["path"]
        self.stdout.write(f"OK: CFKV alias {self.alias!r}, {report['backend']} namespace "
                          f"{report['namespace_id'] or '(default)'} at {where}")
        for step in report["steps"]:
            self.stdout.write(f"  {step['step']:<7} {step['ms']:>8.1f} ms")
        if report["probe"] == "stale":
            self.stdout.write("  The probe read did not see its write yet (KV reads may lag up to 60 s).")
        gateway = report["gateway"]
        if gateway:
            self.stdout.write(f"Talking to the django-cfkv Worker gateway, version {gateway['version']}, "
                              f"namespace {gateway['namespace_id']}.")
        budget = report["budget"]
        if budget:
            self.stdout.write(f"API budget: {budget['remaining']} calls left in this window "
                              f"(resets in {budget['reset_seconds']} s).")
        elif report["base_url"]:
            self.stdout.write("API budget: unknown (the server sent no Ratelimit header).")

    def handle_serve(self, options):
        from ...emulator import EmulatorApp
        from ...emulator.server import serve

        app = EmulatorApp(options["path"], token=options["token"])
        token = "'<your --token>'" if options["token"] else "'any'"

        def announce(server):
            self.stdout.write(
                f"cfkv emulator on {server.base_url} (data in {options['path']}). Development only: no TLS.\n"
                f"Point an alias at it:\n  CFKV = {{{self.alias!r}: {{'BACKEND': 'cloudflare', "
                f"'BASE_URL': {server.base_url!r},\n      'ACCOUNT_ID': 'local', 'NAMESPACE_ID': 'dev', "
                f"'API_TOKEN': {token}}}}}\nCtrl-C to stop.")
            self.stdout.flush()

        serve(app, options["host"], options["port"], on_ready=announce)

    def handle_gateway_init(self, options):
        try:
            from ...gateway import deploy_instructions, write_project
        except ImportError:
            raise CommandError("The Worker gateway is not part of this installation of django-cfkv.")
        namespace_id = options["namespace_id"]
        if namespace_id is None:
            try:
                namespace_id = conf.alias_config(self.alias).get("NAMESPACE_ID") or None
            except ImproperlyConfigured:
                namespace_id = None
        try:
            paths = write_project(options["directory"], namespace_id=namespace_id, name=options["name"],
                                  force=options["force"])
        except FileExistsError as exc:
            raise CommandError(str(exc))
        except (ValueError, OSError) as exc:
            raise CommandError(f"Cannot write the gateway project: {exc}")
        for path in paths:
            self.stdout.write(f"Wrote {path}")
        self.stdout.write("\nNext steps:\n" + deploy_instructions(options["name"], namespace_id))

    # Helpers

    @property
    def kv(self):
        return get_kv(self.alias)

    def _json(self, data):
        self.stdout.write(json.dumps(inspect.jsonable(data), indent=2, ensure_ascii=False))

    def _write_bytes(self, data):
        out = getattr(self.stdout, "_out", sys.stdout)
        out.flush()
        getattr(out, "buffer", out).write(data)
        getattr(out, "buffer", out).flush()

    def _write_calls(self, api_calls):
        if api_calls:
            text = ", ".join(f"{n} {name}" for name, n in sorted(api_calls.items()))
            self.stdout.write(f"\nAPI calls: {sum(api_calls.values())} ({text})")

    def _progress(self, label):
        """Return a callback showing a count on stderr when it is a terminal, else None."""
        if not _isatty(getattr(self.stderr, "_out", None)):
            return None

        def progress(count):
            self._progress_shown = True
            self.stderr.write(f"\r{label} {count} keys", ending="")
            self.stderr.flush()

        return progress

    def _sweep_progress(self):
        if self._progress("") is None:
            return None

        def progress(scanned, deleted):
            self._progress_shown = True
            self.stderr.write(f"\rscanned {scanned} keys, deleted {deleted}", ending="")
            self.stderr.flush()

        return progress

    def _explain(self, exc):
        """Return an error's text with what to do about it."""
        text = str(exc)
        if isinstance(exc, KVBulkError):
            text += f" {len(exc.keys)} keys were left; run the command again to finish."
        elif isinstance(exc, KVRateLimitError):
            text += (" Wait for the window to pass (every call is refused meanwhile); "
                     "the Worker gateway has no such quota.")
        elif isinstance(exc, KVConnectionError):
            text += (f" Check CFKV[{self.alias!r}]['BASE_URL'] and the network"
                     " (for the emulator: is `manage.py cfkv serve` running?).")
        return text

    def _scrub(self, text):
        """Return ``text`` with the alias' API token blanked, should any message carry it."""
        try:
            token = conf.alias_config(self.alias).get("API_TOKEN")
        except ImproperlyConfigured:
            token = None
        token = token.strip() if isinstance(token, str) else None  # as the client sends it
        return text.replace(token, "[API token]") if token and len(token) >= 4 else text


def _isatty(stream):
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def _calls_since(before):
    now = transport.calls.snapshot()
    return {name: n - before.get(name, 0) for name, n in sorted(now.items()) if n - before.get(name, 0)}


def span(seconds):
    """Return a short human duration: "45 s", "12 min", "3.5 h", "2.0 d"."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def when(expires, now):
    """Return an expiry as UTC time and distance: "2026-11-20 12:00:00Z (in 3.5 h)", or "never"."""
    if expires is None:
        return "never"
    stamp = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    left = expires - now
    return f"{stamp} ({'in ' + span(left) if left > 0 else span(left) + ' ago'})"


def filesize(size):
    """Return bytes as "512 B", "1.5 KiB", "3.2 MiB"."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"
