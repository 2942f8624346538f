"""Other projects' test suites run here (django-redis', django-ratelimit's): the list of their tests that cannot
pass here (tests/third_party_skips.txt), and a name map that makes our modules importable under their names."""

import builtins
import contextlib
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from django.utils.module_loading import import_string

SKIP_LIST = Path(__file__).resolve().parents[1] / "third_party_skips.txt"


@contextlib.contextmanager
def names_mapped(name_map: Mapping[str, types.ModuleType]) -> Iterator[None]:
    """Make ``name_map``'s modules importable inside the block; restore what those names were after.

    Only these names: modules that anything else imports meanwhile stay imported (mock.patch.dict on
    sys.modules would drop them, and a second import would make a second copy of their classes).
    """
    saved = {name: sys.modules.get(name) for name in name_map}
    sys.modules.update(name_map)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# The list of tests that cannot pass here.

class ExpectedFailure(NamedTuple):
    """One line of the skip list: a test (``file::Class::test`` or ``file::test``, optionally ``[config]``),
    the exception it fails with here, and why."""

    test: str
    exception: str
    reason: str

    @property
    def path(self) -> str:
        return self.test.split("[", 1)[0]

    @property
    def configuration(self) -> str | None:
        return self.test[len(self.path) + 1:-1] if "[" in self.test else None

    @property
    def error(self) -> type[BaseException]:
        """The exception class the test fails with here (a built-in one, or a dotted path)."""
        return exception_class(self.exception)


def exception_class(name: str) -> object:
    """Return the exception class a skip-list line names: a built-in one, or the dotted path of another."""
    try:
        return import_string(name) if "." in name else getattr(builtins, name, None)
    except ImportError:
        return None


def expected_failures(suite: str, path: Path = SKIP_LIST) -> list[ExpectedFailure]:
    """Return the skip list's lines for ``suite``: ``suite | test | exception | reason`` (``#`` comments)."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split("|")]
        if len(fields) != 4 or not all(fields):
            raise ValueError(f"{path.name}:{number}: expected 'suite | test | exception | reason', got {line!r}")
        error = exception_class(fields[2])
        if not (isinstance(error, type) and issubclass(error, BaseException)):
            kind = "an exception class" if "." in fields[2] else "a built-in exception"
            raise ValueError(f"{path.name}:{number}: {fields[2]!r} is not {kind}")
        if fields[0] == suite:
            found.append(ExpectedFailure(*fields[1:]))
    return found
