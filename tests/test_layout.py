"""Rules of the package's layout that the import contracts (pyproject.toml) cannot state."""

import ast
from pathlib import Path

import django_cfkv

ROOT = Path(django_cfkv.__file__).parent


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"))


def test_no_module_imports_another_modules_private_names():
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("django_cfkv")):
                found += [f"{path}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_no_module_but_clock_reads_the_time_module_for_its_decisions():
    """Time-based decisions read django_cfkv.clock, so a test moves one clock, never ``time.*``."""
    allowed = {
        ("clock.py", "time"), ("clock.py", "monotonic"), ("clock.py", "sleep"),
        ("maintenance/ping.py", "perf_counter"),  # ping's latency figures: a measurement, not a decision
        ("emulator/faults.py", "sleep"),  # injected latency: the network a client waits for
    }
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "time":
                if (str(path), node.attr) not in allowed:
                    found.append(f"{path}:{node.lineno} time.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "time":
                found.append(f"{path}:{node.lineno} from time import ...")
    assert found == []
