"""manage.py cfkv: look at, change and tidy a Workers KV namespace.

A thin shell: the options are in :mod:`django_cfkv.cli.parser`, the text output in
:mod:`django_cfkv.cli.render`; listing, decoding and summaries in :mod:`django_cfkv.inspect`, sweeping
and pinging in :mod:`django_cfkv.maintenance`. This module runs a subcommand and prints its report.
"""

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError

from ... import clock, conf, get_kv, inspect, maintenance, transport
from ...cli import render
from ...cli.parser import add_arguments as add_subcommands
from ...exceptions import KVBulkError, KVConnectionError, KVError, KVRateLimitError
from ...local import LocalKV
from ...text import multiline, one_line
from ...types import KV, KeyInfo

Options = dict[str, Any]


class Command(BaseCommand):
    help = "Inspect and maintain a Cloudflare Workers KV namespace (a CFKV alias)."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_subcommands(parser)

    def handle(self, *args: Any, **options: Any) -> None:
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

    def handle_ls(self, options: Options) -> None:
        limit = options["limit"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        entries, more = inspect.list_entries(self.kv, options["prefix"], limit, self._progress("listed"))
        now = clock.now()
        report = {"alias": self.alias, "prefix": _shown(options["prefix"]),
                  "keys": [inspect.describe(info, now) for info in entries], "more": more}
        self._report(options, report, lambda: render.ls(report, now))

    def handle_get(self, options: Options) -> None:
        key = options["key"]
        if options["raw"] and options["json"]:
            raise CommandError("Use --raw or --json, not both.")
        entry = self.kv.get_with_metadata(key)
        if entry is None:
            raise CommandError(f"No key {inspect.display_key(key)!r} in CFKV alias {self.alias!r}.")
        if options["raw"]:
            if _isatty(self.stdout) and not _shows_as_is(entry.value):  # what a namespace writer stored
                raise CommandError(f"The value of {inspect.display_key(key)!r} holds bytes a terminal would act "
                                   f"on, so --raw does not write it here: redirect it, as in "
                                   f"`manage.py cfkv get KEY --raw > value.bin`, or leave out --raw to see it escaped.")
            return self._write_bytes(entry.value)
        info = KeyInfo(key, self._expiration(key, entry.expiration), entry.metadata)
        result = {**inspect.describe(info), **inspect.decode(key, entry.value, entry.metadata),
                  "size": len(entry.value)}
        self._report(options, result, lambda: render.get(result, clock.now()))

    def handle_put(self, options: Options) -> None:
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
        ttl = f", expires in {render.span(options['ttl'])}" if options["ttl"] else ""
        self.stdout.write(f"Stored {inspect.display_key(options['key'])!r} ({size} bytes{ttl}).")

    def handle_rm(self, options: Options) -> None:
        keys, prefix = options["keys"], options["prefix"]
        if bool(keys) == (prefix is not None):
            raise CommandError("Name the keys to delete, or give --prefix (one of the two).")
        shown = [inspect.display_key(key) for key in keys]
        if prefix is not None:
            listed = inspect.list_entries(self.kv, prefix or None, progress=self._progress("listed"))[0]
            keys = [info.name for info in listed]
            shown = [inspect.display_key(info.name, info.metadata) for info in listed]
        what = f"{len(keys)} key{'' if len(keys) == 1 else 's'}"
        where = f"CFKV alias {self.alias!r}" + (f" with prefix {_shown(prefix)!r}" if prefix else "")
        if options["dry_run"]:
            for key in shown:
                self.stdout.write(one_line(key))
            return self.stdout.write(f"Would delete {what} from {where}.")
        if not keys:
            return self.stdout.write(f"Nothing to delete from {where}.")
        if not options["yes"] and not self._confirm(f"Delete {what} from {where}?",
                                                    f"Refusing to delete {what} from {where} without --yes"):
            return self.stdout.write("Nothing deleted.")
        self.kv.delete_many(keys)
        self.stdout.write(f"Deleted {what} from {where}.")

    def handle_stats(self, options: Options) -> None:
        before = transport.calls.snapshot()
        report = inspect.summarize(self.kv, options["prefix"], read_sizes=options["sizes"],
                                   largest=options["top"], progress=self._progress("listed"))
        report = {"alias": self.alias, **report, "prefix": _shown(report["prefix"]),
                  "api_calls": _calls_since(before)}
        self._report(options, report, lambda: render.stats(report, local=isinstance(self.kv, LocalKV)))

    def handle_sweep(self, options: Options) -> None:
        kinds = inspect.SWEEP_KINDS if options["kind"] == "all" else (options["kind"],)
        before = transport.calls.snapshot()
        sweeper = maintenance.Sweep(self.kv, kinds, dry_run=options["dry_run"], progress=self._sweep_progress())
        try:
            report = sweeper.run()
        except (KeyboardInterrupt, KVError) as exc:
            self.stderr.write(f"Stopped after scanning {sweeper.scanned} keys, deleting {sweeper.deleted}.")
            raise exc
        report = {"alias": self.alias, "kinds": list(kinds), **report, "api_calls": _calls_since(before)}
        self._report(options, report, lambda: render.sweep(report))

    def handle_migrate_sessions(self, options: Options) -> None:
        from ...sessions import token_store

        before = transport.calls.snapshot()
        report = maintenance.move_plain_sessions(token_store(), drop=options["drop"], dry_run=options["dry_run"])
        report = {"alias": self.alias, **report, "api_calls": _calls_since(before)}
        self._report(options, report, lambda: render.migrate_sessions(report))

    def handle_sessions(self, options: Options) -> None:
        from django.contrib.auth import get_user_model

        from ...sessions import revoke_all_sessions, user_sessions
        from ...sessions.value_change import follow_former_value

        model, username = get_user_model(), options["user"]
        try:
            user = model._default_manager.get(**{model.USERNAME_FIELD: username})
        except model.DoesNotExist:
            raise CommandError(f"No user whose {model.USERNAME_FIELD} is {username!r}: nothing was listed or "
                               "signed out.") from None
        except model.MultipleObjectsReturned:
            raise CommandError(f"Several users have {model.USERNAME_FIELD} {username!r}: nothing was listed or "
                               "signed out. Sign them out from the admin's user list.") from None
        except (ValueError, ValidationError):
            raise CommandError(f"{username!r} is not a value {model.USERNAME_FIELD} can hold: nothing was listed "
                               "or signed out.") from None
        before = transport.calls.snapshot()
        try:
            followed = None if options["former"] is None else follow_former_value(user, options["former"])
        except ValueError as exc:
            raise CommandError(f"{exc} Nothing was moved, listed or signed out.") from None
        listed, revoked = ([], revoke_all_sessions(user)) if options["revoke"] else (user_sessions(user), None)
        report = {"alias": self.alias, "user": username, "revoked": revoked, "api_calls": _calls_since(before),
                  "followed": followed,
                  "sessions": [{"ref": s.ref, "kind": s.kind, "device": s.device, "location": s.location,
                                **{name: _epoch(getattr(s, name)) for name in ("created", "last_seen", "expires")}}
                               for s in listed]}
        self._report(options, report, lambda: render.sessions(report, clock.now()))

    def handle_ping(self, options: Options) -> None:
        report = {"alias": self.alias, **maintenance.ping(self.kv, read_only=options["read_only"])}
        self._report(options, report, lambda: render.ping(report))

    def handle_serve(self, options: Options) -> None:
        from ...emulator import EmulatorApp
        from ...emulator.server import EmulatorServer, serve

        def announce(server: EmulatorServer) -> None:
            self._lines(render.serve(server.base_url, options["path"], self.alias, bool(options["token"])))
            self.stdout.flush()

        serve(EmulatorApp(options["path"], token=options["token"]), options["host"], options["port"],
              on_ready=announce)

    def handle_gateway_init(self, options: Options) -> None:
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
        self._lines([f"Wrote {path}" for path in paths])
        self.stdout.write("\nNext steps:\n" + deploy_instructions(options["name"], namespace_id))

    # Helpers

    @property
    def kv(self) -> KV:
        return get_kv(self.alias)

    def _expiration(self, key: str, stated: int | None) -> int | None:
        """Return a key's KV expiry: as the value's answer stated it, else as a listing shows it.

        The Worker gateway cannot state it (a KV binding's read does not return
        it) and Cloudflare leaves it out when there is none: one list call tells.
        """
        if stated is not None or isinstance(self.kv, LocalKV):  # LocalKV always states it
            return stated
        page = self.kv.list_keys(prefix=key, limit=10)  # the key itself sorts first among those it prefixes
        return next((info.expiration for info in page.keys if info.name == key), None)

    def _report(self, options: Options, report: dict[str, Any], text: Callable[[], list[str]]) -> None:
        """Print ``report`` as JSON with ``--json``, else as the lines ``text()`` renders."""
        if options["json"]:
            self.stdout.write(render.as_json(inspect.jsonable(report)))
        else:
            self._lines(text())

    def _lines(self, lines: list[str]) -> None:
        for line in lines:
            self.stdout.write(line)

    def _confirm(self, question: str, refusal: str) -> bool:
        """Ask ``question`` on the terminal; refuse (CommandError) when stdin is not one."""
        if not _isatty(self.stdin):
            raise CommandError(f"{refusal} (stdin is not a terminal, so I cannot ask).")
        self.stdout.write(f"{question} [y/N] ", ending="")
        self.stdout.flush()
        return self.stdin.readline().strip().lower() in ("y", "yes")

    def _write_bytes(self, data: bytes) -> None:
        out = getattr(self.stdout, "_out", sys.stdout)
        out.flush()
        binary: Any = getattr(out, "buffer", out)
        binary.write(data)
        binary.flush()

    def _progress(self, label: str) -> Callable[[int], None] | None:
        """Return a callback showing a count on stderr when it is a terminal, else None."""
        if not _isatty(getattr(self.stderr, "_out", None)):
            return None

        def progress(count: int) -> None:
            self._progress_shown = True
            self.stderr.write(f"\r{label} {count} keys", ending="")
            self.stderr.flush()

        return progress

    def _sweep_progress(self) -> Callable[[int, int], None] | None:
        if not _isatty(getattr(self.stderr, "_out", None)):
            return None

        def progress(scanned: int, deleted: int) -> None:
            self._progress_shown = True
            self.stderr.write(f"\rscanned {scanned} keys, deleted {deleted}", ending="")
            self.stderr.flush()

        return progress

    def _explain(self, exc: Exception) -> str:
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

    def _scrub(self, text: str) -> str:
        """Return ``text`` with the alias' API token blanked, should any message carry it."""
        try:
            token = conf.alias_config(self.alias).get("API_TOKEN")
        except ImproperlyConfigured:
            token = None
        token = token.strip() if isinstance(token, str) else None  # as the client sends it
        return text.replace(token, "[API token]") if token and len(token) >= 4 else text


def _shows_as_is(data: bytes) -> bool:
    """Return True if ``data`` is text a terminal only prints (no escape sequence, no control character)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return multiline(text) == text


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _shown(prefix: str | None) -> str | None:
    """Return a prefix the operator gave, fit to show: a session key's prefix past its first four characters is
    cut short, as a usable id is (most of an id is as good as all of it)."""
    if prefix is None:
        return None
    sessions = conf.setting("SESSION_CFKV_KEY_PREFIX")
    if sessions and prefix.startswith(sessions) and len(prefix) > len(sessions) + 4:
        return prefix[:len(sessions) + 4] + "…"
    return inspect.display_key(prefix)


def _calls_since(before: dict[str, int]) -> dict[str, int]:
    now = transport.calls.snapshot()
    return {name: n - before.get(name, 0) for name, n in sorted(now.items()) if n - before.get(name, 0)}
