"""The documentation builds with no warning and every internal link resolves (what `make docs` checks).

Here so that a change to a docstring, a setting or a page that breaks the docs fails the test suite too."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_documentation_builds_without_a_warning_and_its_links_resolve(tmp_path):
    html = tmp_path / "html"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-a", "-n", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(html)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    links = subprocess.run([sys.executable, str(ROOT / "docs" / "check_links.py"), str(html)],
                           capture_output=True, text=True, timeout=60)
    assert links.returncode == 0, links.stdout + links.stderr
