"""Django's own session contract (SessionTestsMixin) against this engine.

The mixin comes from tests/sessions_tests/tests.py of the installed Django's
sdist (fetched during set-up, tests/third_party.py). That module also imports a custom database
session model from its own package (``from .models import ...``), which would
need Django's test app installed; we take only the module-level imports from
Django itself and the ``SessionTestsMixin`` class, and run them as written.
"""

import ast

from django.test import SimpleTestCase, override_settings

from django_cfkv.sessions import SessionStore
from tests.third_party import django_tests_dir

from .helpers import OnItsOwnEmulator


def load_django_session_tests(name, **names):
    """Return the class ``name`` of Django's sessions_tests, compiled from the sdist's source; ``names`` replace
    what its module imports (``SessionMiddleware=...`` runs its tests on another middleware)."""
    path = django_tests_dir() / "sessions_tests" / "tests.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and not getattr(n, "level", 0)]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    assert len(classes) == 1, f"{name} not found in {path}"
    namespace = {"__name__": "django_sessions_tests"}
    exec(compile(ast.Module(body=imports, type_ignores=[]), str(path), "exec"), namespace)
    namespace.update(names)
    exec(compile(ast.Module(body=classes, type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def load_session_tests_mixin():
    """Return Django's SessionTestsMixin, compiled from the sdist's source."""
    return load_django_session_tests("SessionTestsMixin")


SessionTestsMixin = load_session_tests_mixin()


class LocalKVSignedSessionTests(SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


@override_settings(SESSION_CFKV_FORMAT="json")
class LocalKVJSONSessionTests(SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


class EmulatorSessionTests(OnItsOwnEmulator, SessionTestsMixin, SimpleTestCase):
    """KVClient over HTTP to the emulator: the same contract with real API calls."""

    backend = SessionStore


@override_settings(SESSION_CFKV_FORMAT="json")
class EmulatorJSONSessionTests(EmulatorSessionTests):
    pass
