"""The documentation's claims hold against the code: named tests exist, check ids and settings are all
documented, and the settings snippets are Python a fresh ``startproject`` settings file can take."""

import ast
import builtins
import re
import textwrap
from pathlib import Path

import django

from django_cfkv import conf

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SETTINGS_MARK = "# settings.py"


def _defined_tests():
    names = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names |= set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    return names


def test_every_test_the_threat_model_names_exists():
    page = (DOCS / "explanation" / "security.md").read_text(encoding="utf-8")
    section = page[page.index("\n## Threat model\n"):]
    cited = set(re.findall(r"`(test_\w+)`", section))
    assert len(cited) > 30  # the threat model names its proof
    assert cited - _defined_tests() == set()


def test_every_check_id_is_documented_and_every_documented_id_exists():
    in_code = set()
    for path in (ROOT / "django_cfkv").rglob("*.py"):
        in_code |= set(re.findall(r"django_cfkv\.([EW]\d{3})", path.read_text(encoding="utf-8")))
    documented = set(re.findall(r"`django_cfkv\.([EW]\d{3})`", (DOCS / "reference" / "checks.md").read_text()))
    assert len(in_code) > 30
    assert in_code - documented == set(), "check ids missing from docs/reference/checks.md"
    assert documented - in_code == set(), "docs/reference/checks.md lists ids the code does not have"


def test_every_setting_is_in_the_settings_reference():
    from django_cfkv.cache import OPTION_DEFAULTS
    from django_cfkv.ratelimit import DEFAULTS as RATELIMIT_DEFAULTS

    page = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    names = [*conf.ALIAS_DEFAULTS, *conf.ENV_FALLBACKS, *conf.ENV_FALLBACKS.values(), conf.NAMESPACE_ENV,
             *conf.SETTING_DEFAULTS, *OPTION_DEFAULTS, *RATELIMIT_DEFAULTS]
    missing = [name for name in names if f"`{name}`" not in page]
    assert missing == [], "settings missing from docs/reference/settings.md"


# Settings snippets: a ```python block whose first line is "# settings.py" is meant to be pasted at the end of
# the settings file `django-admin startproject` writes (after the page's earlier settings snippets).


def _startproject_names():
    template = Path(django.__file__).parent / "conf" / "project_template" / "project_name" / "settings.py-tpl"
    return _bound_names(ast.parse(template.read_text(encoding="utf-8")))


def _bound_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _settings_snippets():
    """Yield ``(page, line, source)`` for every settings snippet in the docs, in page order."""
    for path in sorted([ROOT / "README.md", *DOCS.rglob("*.md")]):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if line.strip() == "```python" and number + 1 < len(lines) and lines[number + 1].strip() == SETTINGS_MARK:
                end = next(i for i in range(number + 1, len(lines)) if lines[i].strip() == "```")
                yield path, number + 2, textwrap.dedent("\n".join(lines[number + 1:end]))


def test_the_docs_have_settings_snippets():
    pages = {path.relative_to(ROOT).as_posix() for path, _, _ in _settings_snippets()}
    assert {"docs/getting-started/tutorial.md", "docs/reference/settings.md", "README.md"} <= pages


def test_every_settings_snippet_compiles_and_uses_only_names_it_has():
    known = _startproject_names() | set(dir(builtins))
    problems = []
    defined_on_page = {}
    for path, line, source in _settings_snippets():
        where = f"{path.relative_to(ROOT)}:{line}"
        try:
            tree = ast.parse(source, filename=where)
            compile(tree, where, "exec")
        except SyntaxError as exc:
            problems.append(f"{where}: not valid Python: {exc.msg} (line {exc.lineno} of the snippet)")
            continue
        defined = defined_on_page.setdefault(path, set())
        loaded = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        unknown = loaded - known - defined - _bound_names(tree)
        if unknown:
            problems.append(f"{where}: uses {', '.join(sorted(unknown))}, which a startproject settings file lacks")
        defined |= _bound_names(tree)
    assert problems == []


# README is also the package's long description on the package index, read without a clone: its links are
# absolute, and those into the documentation name pages (and headings) that exist.
DOCS_URL = "https://django-cfkv.readthedocs.io/en/latest/"


def _slugs(markdown):
    """Return the heading anchors MyST gives a page (myst_heading_anchors), GitHub's way."""
    headings = re.findall(r"^#{1,3} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_readme_links_are_absolute_and_reach_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)|<(https?://[^>\s]+)>", readme)
    links = [a or b for a, b in links]
    assert len(links) > 20
    assert [link for link in links if not link.startswith("https://")] == []
    for link in links:
        if not link.startswith(DOCS_URL):
            continue
        page, _, anchor = link[len(DOCS_URL):].partition("#")
        source = DOCS / page.replace(".html", ".md")
        assert source.exists(), f"README links to {link}, but {source.relative_to(ROOT)} does not exist"
        assert not anchor or anchor in _slugs(source.read_text(encoding="utf-8")), f"no #{anchor} in {source}"
