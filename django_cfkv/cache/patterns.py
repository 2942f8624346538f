"""Glob patterns on a cache's own keys, for ``keys``, ``iter_keys`` and ``delete_pattern``.

Only the user's pattern is a glob: glob characters in KV_PREFIX, KEY_PREFIX or
the version match themselves. A pattern is listed by its longest literal
prefix, reading metadata only (never values), and only live entries of this
cache (``kind: cache``) match.
"""

import fnmatch
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple

from django.core.cache.backends.base import BaseCache

from .. import clock, limits, metadata
from ..exceptions import CFKVConfigurationError
from ..types import KeyPage, aiter_pages, iter_pages
from .keys import made_key


class Pattern(NamedTuple):
    """A glob on user keys, as KV keys: the glob, the literal prefix to list by, and the KV key's
    head and tail around the user key."""

    glob: str
    literal: str
    head: str
    tail: str

    def user_key(self, name: str) -> str | None:
        """Return the user key in the KV key ``name``, or None if ``name`` is not one of this pattern's form."""
        if name.startswith(self.head) and name.endswith(self.tail):
            return name[len(self.head):len(name) - len(self.tail)]
        return None


def compile_pattern(cache: BaseCache, kv_prefix: str, pattern: str, version: Any) -> Pattern:
    """Return the Pattern of the glob ``pattern`` on ``cache``'s user keys of ``version``."""
    marker = "\x00"
    made = made_key(cache, marker, version)
    if made.count(marker) != 1:
        raise CFKVConfigurationError("keys(), iter_keys() and delete_pattern() need a KEY_FUNCTION "
                                     "that includes the key unchanged.")
    head, tail = made.split(marker)
    head = kv_prefix + head
    glob = glob_escape(head) + pattern + glob_escape(tail)
    cut = min((pattern.find(c) for c in "*?[" if c in pattern), default=None)
    literal = head + pattern + tail if cut is None else head + pattern[:cut]
    return Pattern(glob, literal, head, tail)


def matches(page: KeyPage, pattern: Pattern, now: float) -> list[str]:
    """Return the KV keys on a listed page that hold live cache entries (at ``now``) matching ``pattern``."""
    names = []
    for info in page.keys:
        meta = metadata.read(info.metadata)
        if meta.kind == metadata.CACHE and meta.is_live(now) and fnmatch.fnmatchcase(info.name, pattern.glob):
            names.append(info.name)
    return names


def user_keys_on(page: KeyPage, pattern: Pattern, now: float) -> list[str]:
    """Return the user keys of the live entries on a listed page matching ``pattern``."""
    return [key for key in map(pattern.user_key, matches(page, pattern, now)) if key is not None]


def page_size(itersize: int | None) -> int:
    """Return the list page size for ``itersize``, a hint as Redis' SCAN count is: None is 1000 (the fewest
    calls), and any other count is held to the 10..1000 keys a KV listing takes."""
    if itersize is None:
        return limits.LIST_MAX_LIMIT
    if isinstance(itersize, bool) or not isinstance(itersize, int):
        raise TypeError(f"itersize must be a whole number of keys or None; got {itersize!r}.")
    return min(max(itersize, limits.LIST_MIN_LIMIT), limits.LIST_MAX_LIMIT)


def user_keys(kv: Any, pattern: Pattern, itersize: int | None) -> Iterator[str]:
    """Yield the user keys of the live entries matching ``pattern``: one list call per ``itersize``
    listed keys (see :func:`page_size`)."""
    now = clock.now()
    for page in iter_pages(kv, pattern.literal or None, page_size(itersize)):
        yield from user_keys_on(page, pattern, now)


async def auser_keys(kv: Any, pattern: Pattern, itersize: int | None) -> AsyncIterator[str]:
    """As :func:`user_keys`, each page awaited."""
    now = clock.now()
    async for page in aiter_pages(kv, pattern.literal or None, page_size(itersize)):
        for key in user_keys_on(page, pattern, now):
            yield key


def glob_escape(text: str) -> str:
    """Return ``text`` as a glob matching itself (as glob.escape, for fnmatch)."""
    return re.sub(r"([*?[])", r"[\1]", text)
