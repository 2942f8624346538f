"""Moving sessions stored under their ids (the plain key layout) to the keys the store uses now (hashed)."""

import math
from typing import Any

from .. import clock
from ..exceptions import CFKVConfigurationError
from ..inspect import exact_expiry, read_values
from ..types import KeyInfo


def move_plain_sessions(store: Any, *, drop: bool = False, dry_run: bool = False,
                        now: float | None = None) -> dict[str, Any]:
    """Move sessions whose key name is their id to the key ``store`` uses now (hashed); or delete them.

    ``store`` is the engine's SessionStore class (its alias, prefix and
    layout). A key counts as plain when the text after the prefix is a
    usable id (a Django session key or a Worker's UUID). Each is written at
    the store's key for that id with its value, metadata and KV expiry, then
    deleted; one past its exact expiry, or whose new key is already listed
    (moved by an earlier run), is only deleted. ``drop`` deletes them all
    (everyone they belong to signs in again); ``dry_run`` changes nothing.
    Run it again after an interruption: it finishes the job.
    Each signed-in session's entry in its user's index is written with it.
    API calls: ceil(listed/1000) lists, ceil(moved/100) bulk reads, then one
    bulk write per 10,000 sessions and entries, and one bulk delete per 10,000.
    Return {"dry_run", "drop", "found", "moved", "deleted"}.
    """
    from ..sessions import entries, is_valid_key, key_layout, plans

    if key_layout() == "plain":
        raise CFKVConfigurationError("SESSION_CFKV_KEY_LAYOUT is 'plain', so sessions already live under "
                                     "their ids: there is nothing to move. Set it to 'hashed' first.")
    kv, prefix = store.get_kv(), store.key_prefix()
    now = clock.now() if now is None else now
    listed, plain = set(), []
    for info in kv.iter_keys(prefix=prefix):
        listed.add(info.name)
        if is_valid_key(info.name[len(prefix):], "json"):
            plain.append(info)
    target = {info.name: store.kv_key(info.name[len(prefix):]) for info in plain}
    to_move = [] if drop else [info for info in plain if target[info.name] not in listed and _live(info, now)]
    report = {"dry_run": dry_run, "drop": drop, "found": len(plain), "moved": 0, "deleted": 0}
    if dry_run or not plain:
        report["moved"] = len(to_move)
        return report
    values = read_values(kv, [info.name for info in to_move])
    live = [info for info in to_move if info.name in values]
    # KV refuses an expiry under 60 s away; the exact one travels in the value.
    expiry = {info.name: None if info.expiration is None else max(info.expiration, math.ceil(now) + 61)
              for info in live}
    items = [{"key": target[info.name], "value": values[info.name], "metadata": info.metadata,
              "expiration": expiry[info.name]} for info in live]
    # Each signed-in session's entry in its user's index, written before its session (in the same bulk write,
    # unless the writes take several), as the store writes them: the user's list and "Sign out everywhere"
    # find it at once. The entry expires with its session.
    moved = {info.name[len(prefix):]: (values[info.name], expiry[info.name]) for info in live}
    index_items = plans.run(entries.for_moved(store, moved, now), store.get_kv)
    if items:
        kv.put_many([*index_items, *items])
    kv.delete_many([info.name for info in plain])
    report.update(moved=len(items), deleted=len(plain))
    return report


def _live(info: KeyInfo, now: float) -> bool:
    expires = exact_expiry(info)
    return expires is None or expires > now
