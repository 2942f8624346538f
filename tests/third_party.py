"""Other projects' test suites, the yardsticks our backends are measured with.

Django's own cache and session contracts (for the installed Django), and the
suites of django-redis and django-ratelimit, are taken from their packages on
the package index during set-up (``make suites``, called by ``make test`` and
by tox), never at test collection: ``python -m tests.third_party`` downloads
what is missing into ``.cache/suites/`` (or ``$CFKV_DJANGO_TESTS_CACHE/suites``).
A test module that needs a suite which was not fetched fails with the command
to run; it is never skipped.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import django

CACHE_ROOT = Path(os.environ.get("CFKV_DJANGO_TESTS_CACHE", Path(__file__).resolve().parent.parent / ".cache"))
SUITES = CACHE_ROOT / "suites"

# Pinned: a new release of a peer is a deliberate upgrade, not a surprise in CI.
DJANGO_REDIS = "7.0.0"
DJANGO_RATELIMIT = "4.1.0"


class SuiteMissing(RuntimeError):
    """A third-party suite was not fetched during set-up."""


def django_tests_dir():
    """Return the folder holding Django's ``tests/`` tree for the installed Django."""
    return _fetched(f"django-{django.get_version()}") / "tests"


def django_redis_tests_dir():
    """Return the folder holding django-redis' ``tests/`` tree."""
    return _fetched(f"django-redis-{DJANGO_REDIS}") / "tests"


def django_ratelimit_tests_file():
    """Return the path of django-ratelimit's ``django_ratelimit/tests.py``."""
    return _fetched(f"django-ratelimit-{DJANGO_RATELIMIT}") / "django_ratelimit" / "tests.py"


def _fetched(name):
    root = SUITES / name
    if not (root / ".complete").exists():
        raise SuiteMissing(
            f"The test suite {name} has not been fetched. Run `make suites` "
            f"(or `{Path(sys.executable).name} -m tests.third_party`) once; it downloads it from the package index."
        )
    return root


def fetch_all():
    """Download every suite that is missing; return the names fetched."""
    wanted = {
        f"django-{django.get_version()}": lambda into: _from_sdist("django", django.get_version(), into, "tests/"),
        f"django-redis-{DJANGO_REDIS}": lambda into: _from_sdist("django-redis", DJANGO_REDIS, into, "tests/"),
        f"django-ratelimit-{DJANGO_RATELIMIT}": lambda into: _from_wheel(
            "django-ratelimit", DJANGO_RATELIMIT, into, "django_ratelimit/"),
    }
    return fetch_missing(wanted)


def fetch_missing(wanted):
    """Call ``wanted[name](folder)`` for each suite ``name`` not yet in place; return the names fetched."""
    fetched = []
    for name, fetch in wanted.items():
        root = SUITES / name
        if (root / ".complete").exists():
            continue
        # Extracted beside its place and renamed into it whole: tox environments run in parallel
        # (`tox run-parallel`) may fetch the same suite at once, and none may read a half-written one.
        SUITES.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=SUITES, prefix=f".{name}-") as tmp:
            fetch(Path(tmp))
            (Path(tmp) / ".complete").touch()
            if root.exists() and not (root / ".complete").exists():
                shutil.rmtree(root)  # a fetch interrupted before this module renamed whole folders
            try:
                Path(tmp).rename(root)
            except OSError:
                if not (root / ".complete").exists():
                    raise
                continue  # another process put it in place first
        fetched.append(name)
    return fetched


def _download(requirement, into, *, sdist):
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind, "-d", str(into), requirement],
        check=True,
    )
    found = sorted(p for p in Path(into).iterdir() if p.suffix in (".gz", ".whl"))
    if not found:
        raise RuntimeError(f"pip downloaded nothing for {requirement}")
    return found[0]


def _from_sdist(project, version, root, folder):
    """Extract ``folder`` (relative to the sdist's top directory) into ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(_download(f"{project}=={version}", tmp, sdist=True)) as tar:
            for member in tar.getmembers():
                relative = member.name.split("/", 1)[1] if "/" in member.name else ""
                if member.isfile() and relative.startswith(folder):
                    target = root / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src:
                        target.write_bytes(src.read())


def _from_wheel(project, version, root, folder):
    """Extract the files under ``folder`` of the wheel into ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(_download(f"{project}=={version}", tmp, sdist=False)) as wheel:
            for name in wheel.namelist():
                if name.startswith(folder) and not name.endswith("/"):
                    target = root / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(wheel.read(name))


if __name__ == "__main__":
    done = fetch_all()
    print("fetched: " + (", ".join(done) if done else "nothing (all present)"))
