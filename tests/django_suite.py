"""Fetch Django's own test modules from the sdist of the installed Django.

Django's contract tests (``BaseCacheTests``, ``SessionTestsMixin``) are the
reference for our backends. They are not vendored: the sdist of exactly the
installed version is downloaded from the package index once, cached under
``.cache/django-tests/<version>/``, and the wanted files are extracted.
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import django

CACHE_ROOT = Path(os.environ.get("CFKV_DJANGO_TESTS_CACHE", Path(__file__).resolve().parent.parent / ".cache"))


def django_tests_dir():
    """Return the folder holding Django's ``tests/`` tree for the installed version."""
    version = django.get_version()
    root = CACHE_ROOT / "django-tests" / version
    marker = root / ".complete"
    if marker.exists():
        return root / "tests"
    root.mkdir(parents=True, exist_ok=True)
    sdist = _download_sdist(version, root)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name and m.isfile()]
        for member in members:
            relative = member.name.split("/tests/", 1)[1]
            target = root / "tests" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src:
                target.write_bytes(src.read())
    sdist.unlink()
    marker.touch()
    return root / "tests"


def django_test_source(relative_path):
    """Return the text of one file of Django's test suite, e.g. ``cache/tests.py``."""
    return (django_tests_dir() / relative_path).read_text(encoding="utf-8")


def _download_sdist(version, into):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "-d", str(into), f"django=={version}"],
        check=True,
    )
    found = sorted(into.glob("[dD]jango-*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip downloaded no Django {version} sdist into {into}")
    return found[0]
