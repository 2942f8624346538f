"""Mutation testing, run by ``make mutate`` (the Makefile lists the modules and the tests of each).

For each ``MODULE=TEST[,TEST...]`` argument, cosmic-ray changes MODULE one mutation at a time (an
operator flipped, a constant moved by one, a comparison or a condition turned round, ...), runs the
tests after each change, and records whether they failed (the mutant is killed) or passed (it
survived). A survivor is a change no test noticed: a test is missing, or the code does not matter.
Survivors are printed with their diffs; each module's session stays in .cache/mutation/ for
``cr-report`` and ``cr-html``.

cosmic-ray edits the module in place and puts it back after each mutant; this script puts it back
too if the run is interrupted. Run nothing else in the same tree meanwhile.

    python -m tests.mutate django_cfkv/limits.py=tests/kv/test_bad_input.py [--only limits]
"""

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = ROOT / ".cache" / "mutation"
TIMEOUT = 120.0  # seconds one test run may take before its mutant counts as killed (a hang: 100 ** 10 ** 9)

CONFIG = """\
[cosmic-ray]
module-path = "{module}"
timeout = {timeout}
excluded-modules = []
test-command = "{python} -m pytest -x -q -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"
"""


def mutate(module: str, tests: list[str]) -> str:
    """Run every mutant of ``module`` against ``tests``; return cosmic-ray's report of the survivors."""
    bin_dir = Path(sys.executable).parent
    name = module.removesuffix(".py").replace("/", ".")
    config, session = SESSIONS / f"{name}.toml", SESSIONS / f"{name}.sqlite"
    config.write_text(CONFIG.format(module=module, timeout=TIMEOUT, python=sys.executable, tests=" ".join(tests)))
    source = ROOT / module
    original = source.read_bytes()
    try:
        for command in (["init", "--force", config, session], ["baseline", config], ["exec", config, session]):
            subprocess.run([bin_dir / "cosmic-ray", *command], cwd=ROOT, check=True)
    finally:
        if source.read_bytes() != original:  # an interrupted run can leave a mutant in place
            source.write_bytes(original)
    report = subprocess.run([bin_dir / "cr-report", "--surviving-only", "--show-diff", session], cwd=ROOT,
                            check=True, capture_output=True, text=True)
    return report.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", metavar="MODULE=TEST[,TEST...]")
    parser.add_argument("--only", help="run only the modules whose path contains this text")
    args = parser.parse_args(argv)
    SESSIONS.mkdir(parents=True, exist_ok=True)
    for target in args.targets:
        module, _, tests = target.partition("=")
        if not (ROOT / module).is_file() or not tests:
            parser.error(f"{target!r}: expected MODULE=TEST[,TEST...] with MODULE a file of this tree")
        if args.only and args.only not in module:
            continue
        print(f"== {module}: mutants against {tests}", flush=True)
        print(mutate(module, tests.split(",")), flush=True)


if __name__ == "__main__":
    main()
