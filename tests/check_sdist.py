"""Check that a built sdist can set itself up and run its own tests and docs build.

Usage: python tests/check_sdist.py DIST_DIR   (the folder holding django_cfkv-*.tar.gz; run by tox -e packaging)

It unpacks the sdist and checks that
- every file the repository tracks under the folders the tests, the Makefile and tox use (the package, tests,
  docs, bench, example_project) and every top-level file they read is in it (from `git ls-files` when run in a
  clone; otherwise from the list of must-haves below);
- nothing is in it that a build leaves behind (node_modules, SQLite files, bytecode, built docs);
- `make -n venv gateway-deps docs` finds every file its rules need (a dry run: nothing is installed).
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_FOLDERS = ("django_cfkv", "tests", "docs", "bench", "example_project")
TOP_LEVEL = ("pyproject.toml", "Makefile", "tox.ini", "requirements-dev.txt", "README.md", "CHANGELOG.md",
             "CONTRIBUTING.md", "LICENSE")
MUST_HAVE = TOP_LEVEL + (
    "django_cfkv/gateway/worker.js", "django_cfkv/py.typed", "tests/gateway/package.json",
    "tests/gateway/package-lock.json", "tests/workers/session-store.mjs", "tests/third_party.py",
    "example_project/manage.py", "bench/__main__.py", "docs/conf.py", "docs/index.md", "docs/check_links.py",
    "docs/explanation/security.md", "docs/reference/stored-formats.md", "docs/reference/checks.md",
    "docs/reference/settings.md",
)
NEVER = ("node_modules/", "__pycache__/", ".pyc", ".sqlite3", "docs/_build/", "bench/results/")


def tracked_files():
    """Return the files git tracks that the sdist must carry, or None outside a clone."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = subprocess.run(["git", "ls-files", "--", *SHIPPED_FOLDERS, *TOP_LEVEL], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return {name for name in out.splitlines() if (ROOT / name).is_file()}


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    archives = sorted(Path(argv[1]).glob("django_cfkv-*.tar.gz"))
    if len(archives) != 1:
        sys.exit(f"Expected one django_cfkv-*.tar.gz in {argv[1]}, found {len(archives)}.")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archives[0]) as archive:
        archive.extractall(tmp, filter="data")
        (top,) = Path(tmp).iterdir()
        shipped = {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()}
        expected = tracked_files() or set(MUST_HAVE)
        problems = [f"missing: {name}" for name in sorted(expected - shipped)]
        problems += [f"should not ship: {name}" for name in sorted(shipped) if any(bad in name for bad in NEVER)]
        dry_run = subprocess.run(["make", "-n", "venv", "gateway-deps", "docs"], cwd=top, capture_output=True,
                                 text=True)
        if dry_run.returncode:
            problems.append(f"make -n venv gateway-deps docs fails in the sdist: {dry_run.stderr.strip()}")
    for problem in problems:
        print(problem, flush=True)
    if problems:
        sys.exit(f"{archives[0].name}: {len(problems)} problem(s).")
    print(f"{archives[0].name}: {len(shipped)} files; it holds what its Makefile, tests and docs need.")


if __name__ == "__main__":
    main(sys.argv)
