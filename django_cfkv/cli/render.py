"""The text output of ``manage.py cfkv``: each subcommand's report as lines (``--json`` prints it whole)."""

import json
from datetime import datetime, timezone
from typing import Any

from ..text import json_text, multiline, one_line

Report = dict[str, Any]

_EXPIRY_LABELS = {"expired": "expired, not yet removed", "lt_1h": "< 1 h", "lt_1d": "< 1 d", "lt_7d": "< 7 d",
                  "later": ">= 7 d", "never": "never"}


def as_json(report: Any) -> str:
    """Return a report (made JSON-able) as ``--json`` prints it: indented, non-ASCII kept as it is, and no
    character that a terminal acts on, which JSON escapes as it escapes the rest."""
    return json_text(json.dumps(report, indent=2, ensure_ascii=False))


def span(seconds: float) -> str:
    """Return a short human duration: "45 s", "12 min", "3.5 h", "2.0 d"."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def when(expires: float | None, now: float) -> str:
    """Return an expiry as UTC time and distance: "2026-11-20 12:00:00Z (in 3.5 h)", or "never"."""
    if expires is None:
        return "never"
    try:
        stamp = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # a namespace writer's time, past what a datetime holds
        return f"{expires:g} (not a time)"
    left = expires - now
    return f"{stamp} ({'in ' + span(left) if left > 0 else span(left) + ' ago'})"


def filesize(size: int) -> str:
    """Return bytes as "512 B", "1.5 KiB", "3.2 MiB"."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def api_calls(calls: dict[str, int]) -> list[str]:
    if not calls:
        return []
    text = ", ".join(f"{n} {name}" for name, n in sorted(calls.items()))
    return [f"\nAPI calls: {sum(calls.values())} ({text})"]


def ls(report: Report, now: float) -> list[str]:
    rows = report["keys"]
    keys = [one_line(r["key"]) for r in rows]  # a namespace writer's text: nothing in it reaches the terminal raw
    width = min(72, max([len(key) for key in keys] + [3]))  # 72: a hashed session key
    lines = [f"{'KEY':<{width}}  {'KIND':<9}  {'EXPIRES':<40}  METADATA"]
    for key, r in zip(keys, rows, strict=True):
        meta = "" if r["metadata"] is None else json.dumps(r["metadata"], separators=(",", ":"))  # ASCII
        lines.append(f"{key:<{width}}  {r['kind']:<9}  {when(r['expires'], now):<40}  {meta}".rstrip())
    tail = "; more not shown (raise --limit)" if report["more"] else ""
    return lines + [f"{len(rows)} key{'' if len(rows) == 1 else 's'}{tail}"]


def get(result: Report, now: float) -> list[str]:
    how = result["format"] if result["decoder"] == "generic" else f"decoded by {result['decoder']}"
    lines = [f"key:       {one_line(result['key'])}", f"kind:      {result['kind']} ({how})",
             f"expires:   {when(result['expires'], now)}"
             + ("  [expired: readers treat it as missing]" if result["expired"] else "")]
    if result["kv_expiration"] != result["expires"]:
        lines.append(f"KV expiry: {when(result['kv_expiration'], now)}")
    value_expires = result["value_expires"]
    if value_expires is not None and abs(value_expires - (result["expires"] or 0)) > 1:
        lines.append(f"in value:  {when(value_expires, now)}")
    lines += [f"metadata:  {json.dumps(result['metadata'])}", f"size:      {result['size']} bytes"]
    if result["format"] == "bytes":
        lines.append("value (binary, base64; use --raw for the bytes):")
    else:
        lines.append("value:")
    value = result["value"]
    return lines + [multiline(value) if isinstance(value, str)
                    else json_text(json.dumps(value, indent=2, ensure_ascii=False))]


def stats(report: Report, *, local: bool = False) -> list[str]:
    """Return the lines of ``cfkv stats``; ``local``: the embedded store, which makes no API calls."""
    lines = [f"{report['keys']} key{'' if report['keys'] == 1 else 's'} in CFKV alias {report['alias']!r}"
             + (f" with prefix {report['prefix']!r}" if report["prefix"] else ""),
             f"\n{'kind':<10} {'keys':>8} {'size':>10}"]
    unknown = 0
    for kind, row in report["kinds"].items():
        missing = row["count"] - row["bytes_known"]
        unknown += missing
        note = f"  (size unknown for {missing})" if missing else ""
        size = "unknown" if row["count"] and not row["bytes_known"] else filesize(row["bytes"])
        lines.append(f"{kind:<10} {row['count']:>8} {size:>10}{note}")
    if unknown and not report["sizes_read"]:
        cost = "from the SQLite file" if local else "(about 1 API call per 100 keys)"
        lines.append(f"Sizes not recorded in metadata are unknown: --sizes reads those values {cost}.")
    lines.append("\nexpires")
    lines += [f"  {_EXPIRY_LABELS[bucket]:<26} {count:>8}" for bucket, count in report["expiry"].items()]
    if report["largest"]:
        lines.append("\nlargest keys")
        lines += [f"  {filesize(row['bytes']):>10}  {row['kind']:<9}  {one_line(row['key'])}"
                  for row in report["largest"]]
    return lines + api_calls(report["api_calls"])


def sweep(report: Report) -> list[str]:
    verb = "Would delete" if report["dry_run"] else "Deleted"
    count = report["found"] if report["dry_run"] else report["deleted"]
    lines = [f"Scanned {report['scanned']} keys. {verb} {count}:"]
    lines += [f"  {kind:<10} {counts['expired']:>8} expired {counts['orphaned']:>8} orphaned"
              for kind, counts in report["by_kind"].items()]
    if report["values_read"]:
        lines.append(f"Read {report['values_read']} values that carry their expiry inside.")
    return lines + api_calls(report["api_calls"])


def migrate_sessions(report: Report) -> list[str]:
    found = f"{report['found']} session{'' if report['found'] == 1 else 's'} stored under their ids"
    lines = [f"Found {found} in CFKV alias {report['alias']!r}."]
    if report["dry_run"]:
        verb = "delete" if report["drop"] else f"move {report['moved']} to hashed keys and delete"
        lines.append(f"Would {verb} {report['found']} old keys.")
    elif report["found"]:
        moved = "" if report["drop"] else f"Moved {report['moved']} to hashed keys; "
        lines.append(f"{moved}deleted {report['deleted']} old keys.")
    return lines + api_calls(report["api_calls"])


def sessions(report: Report, now: float) -> list[str]:
    """A user's sessions, the most recently seen first; or, after --revoke, how many were signed out."""
    user, rows = report["user"], report["sessions"]
    followed = [] if report["followed"] is None else [_followed(user, report["followed"])]
    if report["revoked"] is not None:
        count = report["revoked"]
        return followed + [f"Signed {user!r} out of {count} session{'' if count == 1 else 's'}. Another Cloudflare "
                           "location may still accept them for up to a minute."] + api_calls(report["api_calls"])
    lines = followed + [f"{len(rows)} session{'' if len(rows) == 1 else 's'} of {user!r} in CFKV alias "
                        f"{report['alias']!r}" + (":" if rows else ".")]
    for r in rows:
        seen = "last seen unknown" if r["last_seen"] is None else f"last seen {span(now - r['last_seen'])} ago"
        lines += [f"  {r['kind'] or 'session'}: {r['device'] or 'unknown device'}, {r['location'] or 'unknown place'}",
                  f"    {seen}; expires {when(r['expires'], now)}; ref {r['ref']}"]
    return lines + api_calls(report["api_calls"])


def _followed(user: str, count: int) -> str:
    return f"Moved {count} session{'' if count == 1 else 's'} from {user!r}'s former value to the current one."


def ping(report: Report) -> list[str]:
    where = report["base_url"] or report["path"]
    lines = [f"OK: CFKV alias {report['alias']!r}, {report['backend']} namespace "
             f"{report['namespace_id'] or '(default)'} at {where}"]
    lines += [f"  {step['step']:<7} {step['ms']:>8.1f} ms" for step in report["steps"]]
    if report["probe"] == "stale":
        lines.append("  The probe read did not see its write yet (KV reads may lag up to 60 s).")
    gateway = report["gateway"]
    if gateway:
        lines.append(f"Talking to the django-cfkv Worker gateway, version {one_line(str(gateway['version']))}, "
                     f"namespace {one_line(str(gateway['namespace_id']))}.")  # as the gateway said
    budget = report["budget"]
    if budget:
        lines.append(f"API budget: {budget['remaining']} calls left in this window "
                     f"(resets in {budget['reset_seconds']} s).")
    elif report["base_url"]:
        lines.append("API budget: unknown (the server sent no Ratelimit header).")
    return lines


def serve(base_url: str, path: str, alias: str, token_given: bool) -> list[str]:
    token = "'<your --token>'" if token_given else "'any'"
    return [f"cfkv emulator on {base_url} (data in {path}). Development only: no TLS.\n"
            f"Point an alias at it:\n  CFKV = {{{alias!r}: {{'BACKEND': 'cloudflare', "
            f"'BASE_URL': {base_url!r},\n      'ACCOUNT_ID': 'local', 'NAMESPACE_ID': 'dev', "
            f"'API_TOKEN': {token}}}}}\nCtrl-C to stop."]
