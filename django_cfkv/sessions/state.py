"""What a SessionStore knows of its session's copy in KV, named: save() decides by it."""

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .users import UserRef


class State(enum.Enum):
    """What a store knows of its session's copy in KV: it decides whether ``save()`` asks KV first."""

    #: Not read from KV by this store (never loaded, deleted, or written without a read): a write asks KV first.
    UNREAD = "unread"
    #: The key was drawn here and is not written yet: nothing stored to lose, the write needs no check.
    NEW = "new"
    #: Read from KV by this store (one GET), or written after such a read: writes need no check.
    READ = "read"
    #: Read from the near cache, which may outlive a logout elsewhere: a write asks KV first.
    NEAR = "near"
    #: KV could not be reached on load: the data is an empty stand-in, never written over the stored session.
    LOAD_FAILED = "load failed"


class Indexed(NamedTuple):
    """What a session's entry in its user's index records, as far as save() compares it."""

    user: str  # Django's user id
    expires: float  # the session's expiry, epoch s
    client: str  # the client it was signed in from (its fields as JSON)


@dataclass
class Stored:
    """The session as this store last read it from KV or wrote it there."""

    canonical: str | bytes | None = None  # the data in canonical form (None: any save writes)
    expires: float | None = None  # its expiry, epoch s
    ends: float | None = None  # the absolute end (epoch s) that no refresh passes, if any
    created: float | None = None  # createdAt, epoch ms, kept by every write
    extra: dict[str, Any] = field(default_factory=dict)  # the Worker's top-level fields (JSON format)
    user_ref: UserRef | None = None  # (Django's user id, the userId value it maps to)
    user: str | None = None  # Django's user id in it
    index: Indexed | None = None  # its index entry, as this store read or wrote the session (index_known)
    index_known: bool = False  # False: never read or written here, so its entry (if any) is unknown
    owner: tuple[str, str | None] | None = None  # (Django's user id, its userId as text): the index's name input
