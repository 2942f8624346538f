"""The subcommands and options of ``manage.py cfkv``."""

import argparse
from collections.abc import Callable

#: Subcommands that change nothing: each takes ``--json``.
_READ_ONLY = ("ls", "get", "stats", "ping", "sweep")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every subcommand of ``manage.py cfkv`` to the command's parser."""
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--alias", default="default", help='CFKV alias (default "default")')
        if name in _READ_ONLY:
            p.add_argument("--json", action="store_true", help=f"print JSON (schema: {JSON_SCHEMA_DOCS})")
        _skip_checks_here(p)
        return p

    for add in (_keys, _upkeep, _servers):
        add(command, sub)


_Command = Callable[[str, str], argparse.ArgumentParser]

#: Where the JSON each read-only subcommand prints is described.
JSON_SCHEMA_DOCS = "https://django-cfkv.readthedocs.io/en/latest/reference/command.html"


def _skip_checks_here(parser: argparse.ArgumentParser) -> None:
    """Let Django's ``--skip-checks`` follow the subcommand too (``cfkv ping --skip-checks``)."""
    # SUPPRESS: unless given here, the value given before the subcommand (or Django's default) stands.
    parser.add_argument("--skip-checks", action="store_true", default=argparse.SUPPRESS,
                        help="skip Django's system checks")


def _keys(command: _Command, sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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


def _upkeep(command: _Command, sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = command("stats", "Count keys and sizes by kind; expiry histogram; largest keys.")
    p.add_argument("--prefix", help="only keys starting with this")
    p.add_argument("--sizes", action="store_true",
                   help="read values whose size the metadata does not record (about 1 call per 100 keys)")
    p.add_argument("--top", type=int, default=10, help="how many largest keys to show (default 10)")

    p = command("sweep", "Delete entries past their own expiry that KV has not removed yet.")
    p.add_argument("--dry-run", action="store_true", help="count only; delete nothing")
    p.add_argument("--kind", choices=["sessions", "cache", "ratelimit", "all"], default="all")

    # Sessions live in SESSION_CFKV_ALIAS: no --alias to get wrong (migrate-sessions, sessions).
    help_text = ("Move sessions stored under their ids (the plain key layout, the only one before "
                 "SESSION_CFKV_KEY_LAYOUT) to hashed keys.")
    p = sub.add_parser("migrate-sessions", help=help_text, description=help_text)
    p.add_argument("--drop", action="store_true", help="delete them instead: their users sign in again")
    p.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    p.add_argument("--json", action="store_true", help="print JSON")
    _skip_checks_here(p)

    help_text = "List a user's sessions (cookie sessions and bearer tokens), or sign the user out of every one."
    p = sub.add_parser("sessions", help=help_text, description=help_text)
    p.add_argument("--user", required=True, metavar="USERNAME", help="the user, by the user model's USERNAME_FIELD")
    p.add_argument("--revoke", action="store_true", help="sign the user out everywhere (Sign out everywhere)")
    p.add_argument("--former", metavar="VALUE", help="first move the index kept under the user's former "
                   "SESSION_CFKV_USER_FIELD value to their current one (after a change no save signal saw)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _skip_checks_here(p)

    p = command("ping", "Check the token and namespace; show latency and the API budget left.")
    p.add_argument("--read-only", action="store_true", help="no probe write: one list call only")


def _servers(command: _Command, sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
    _skip_checks_here(p)
