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


def _layout_block() -> list[str]:
    text = (ROOT.parent / "docs" / "project" / "layout.md").read_text(encoding="utf-8")
    block = text.split("```text\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _section(lines: list[str], package: str) -> list[str]:
    """The lines of ``package``'s entry in the drawing: its header and everything indented below it."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(package + "/"))
    depth = len(lines[start]) - len(lines[start].lstrip())
    end = next((i for i in range(start + 1, len(lines)) if len(lines[i]) - len(lines[i].lstrip()) <= depth),
               len(lines))
    return lines[start:end]


def test_the_layout_page_names_every_module():
    """docs/project/layout.md draws the package one line per module; a module it does not name is missing."""
    lines = _layout_block()
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.name == "__init__.py" and len(relative.parts) > 1:
            continue
        if any(str(relative) in line for line in lines):
            continue
        section = lines
        for package in relative.parts[:-1]:
            try:
                section = _section(section, package)
            except StopIteration:
                section = []
                break
        if not any(relative.name in line for line in section):
            missing.append(str(relative))
    assert missing == [], f"add these modules to docs/project/layout.md: {missing}"
