"""The documentation's claims point at tests that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _defined_tests():
    names = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names |= set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    return names


def test_every_test_the_security_section_names_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Security\n"):readme.index("\n## Development\n")]
    cited = set(re.findall(r"`(test_\w+)`", section))
    assert len(cited) > 30  # the threat model names its proof
    assert cited - _defined_tests() == set()
