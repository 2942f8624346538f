"""The first hour, as a new user lives it: the settings snippets of the docs, pasted into the settings file of a
fresh `django-admin startproject`, pass `check`, `migrate` and serve a login and the cache; the tutorial's project
also reaches its 429.

Snippets are read from the docs by their marker (a ```python block whose first line is ``# settings.py``), never
copied here. A page whose snippets install django_cfkv starts from a fresh project; a page that adds to a project
(the emulator and Cloudflare steps, the how-to guides) starts from the tutorial's. Placeholders the reader fills in
(``"..."``, ``"<your ...>"``, the emulator's port 8787) are filled in with this test's emulator.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from django_cfkv.testing.emulator import RunningEmulator
from tests.test_docs import ROOT, _settings_snippets

TUTORIAL = "docs/getting-started/tutorial.md"
INSTALLS = 'INSTALLED_APPS += ["django_cfkv"]'

# Run inside the project (manage.py shell): a user signs in to the admin and uses the cache.
SIGN_IN = """
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()  # the test client's host, 'testserver'
get_user_model().objects.create_superuser("ada", "ada@example.com", "first-hour-pw")
client = Client()
assert client.get("/admin/login/").status_code == 200
answer = client.post("/admin/login/?next=/admin/", {"username": "ada", "password": "first-hour-pw"})
assert answer.status_code == 302, answer.status_code
assert client.get("/admin/").status_code == 200, "signed in, the session holds"
cache.set("report", {"rows": 3}, 60)
assert cache.get("report") == {"rows": 3}
print("SIGNED-IN")
"""

# The tutorial's "Try it": visits counted in the session, a report cached, the sixth POST to the login a 429.
TRY_IT = """
import time
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()
get_user_model().objects.create_superuser("ada", "ada@example.com", "first-hour-pw")
client = Client()
first, second = client.get("/").content.decode(), client.get("/").content.decode()
assert first.startswith("Visit 1 ") and second.startswith("Visit 2 "), (first, second)
report = re.search(r"Report computed at (\\S+),", first).group(1)
assert f"Report computed at {report}," in second, "the report comes from the cache"
if time.time() % 60 > 50:  # the rule counts per clock minute: keep the six POSTs in one
    time.sleep(61 - time.time() % 60)
statuses = [client.post("/admin/login/", {"username": "ada", "password": "first-hour-pw"}).status_code]
assert "Signed in as ada." in client.get("/").content.decode()
statuses += [client.post("/admin/login/", {"username": "ada", "password": "wrong"}).status_code for _ in range(5)]
assert statuses == [302, 200, 200, 200, 200, 429], statuses
print("TRIED-IT")
"""


def _pages():
    pages = {}
    for path, _, source in _settings_snippets():
        pages.setdefault(path.relative_to(ROOT).as_posix(), []).append(source)
    return pages


PAGES = _pages()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The emulator as the docs start it: `python -m django_cfkv.emulator`, which takes any token."""
    running = RunningEmulator(tmp_path_factory.mktemp("emulator") / "kv.sqlite3", token=None)
    yield running
    running.stop()


def fill_in(source, emulator):
    """Return ``source`` with the values a reader fills in given as this test's emulator."""
    host = emulator.base_url.split("/client/v4")[0]
    source = source.replace("http://127.0.0.1:8787", host)
    source = re.sub(r'("BASE_URL":\s*)"[^"]*<[^"]*>[^"]*"', rf'\1"{emulator.base_url}"', source)
    return re.sub(r'"[^"\n]*<[^"\n]*>[^"\n]*"|"\.\.\."', '"filled-in"', source)


def run(project, *args, env):
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"manage.py {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def new_project(tmp_path, pages, emulator):
    """Return a fresh startproject folder whose settings end with the snippets of ``pages``, in order."""
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)], check=True,
                   timeout=60)
    settings = tmp_path / "mysite" / "settings.py"
    for page in pages:
        for source in PAGES[page]:
            settings.write_text(settings.read_text() + "\n" + fill_in(source, emulator) + "\n")
    return tmp_path


def tutorial_urls():
    """Return the tutorial's mysite/urls.py, as the page gives it."""
    text = (ROOT / TUTORIAL).read_text(encoding="utf-8")
    return re.search(r"```python\n(# mysite/urls\.py\n.*?)```", text, re.S).group(1)


def user_env(emulator):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "CFKV_", "DJANGO_SETTINGS"))}
    env.update(CLOUDFLARE_ACCOUNT_ID="first-hour", CLOUDFLARE_API_TOKEN="any-token", CFKV_NAMESPACE_ID="first-hour",
               CFKV_GATEWAY_TOKEN="any-gateway-token", CLOUDFLARE_BASE_URL=emulator.base_url,
               PYTHONPATH=str(ROOT))
    return env


def test_the_snippet_pages_are_found_and_the_complete_embedded_store_snippet_comes_first():
    assert {TUTORIAL, "README.md", "docs/reference/settings.md", "docs/getting-started/emulator.md"} <= set(PAGES)
    tutorial = PAGES[TUTORIAL][0]
    assert INSTALLS in tutorial and '"BACKEND": "local"' in tutorial and "SESSION_ENGINE" in tutorial
    readme = PAGES["README.md"][0]
    assert INSTALLS in readme and '"BACKEND": "local"' in readme


@pytest.mark.parametrize("page", sorted(PAGES))
def test_each_page_pasted_into_a_fresh_project_checks_migrates_and_signs_in(page, tmp_path, emulator):
    pasted_alone = any(INSTALLS in source for source in PAGES[page])
    project = new_project(tmp_path, [page] if pasted_alone else [TUTORIAL, page], emulator)
    env = user_env(emulator)
    output = run(project, "check", "--fail-level", "WARNING", env=env)
    assert "no issues" in output
    run(project, "migrate", "--no-input", env=env)
    assert "SIGNED-IN" in run(project, "shell", "--no-imports", "-c", SIGN_IN, env=env)


def test_the_tutorial_reaches_its_sessions_cache_and_429(tmp_path, emulator):
    project = new_project(tmp_path, [TUTORIAL], emulator)
    (project / "mysite" / "urls.py").write_text(tutorial_urls())
    env = user_env(emulator)
    run(project, "check", "--fail-level", "WARNING", env=env)
    run(project, "migrate", "--no-input", env=env)
    script = "import re\n" + textwrap.dedent(TRY_IT)
    assert "TRIED-IT" in run(project, "shell", "--no-imports", "-c", script, env=env)
    assert (project / "cfkv.sqlite3").exists(), "the store is beside manage.py, where the tutorial says"


TESTING = "docs/howto/testing.md"

# What the testing page asks of the tutorial's project: a cached profile page, and a cache that answers misses
# while KV is down.
PROFILE_PAGE = """
from django.core.cache import cache
from django.http import HttpResponse


def profile(request, name):
    html = cache.get(f"profile:{name}")
    if html is None:
        html = f"<h1>{name}</h1>"
        cache.set(f"profile:{name}", html, 60)
    return HttpResponse(html)


urlpatterns += [path("profile/<str:name>/", profile)]
"""
IGNORE_EXCEPTIONS = 'CACHES["default"]["OPTIONS"] = {"IGNORE_EXCEPTIONS": True}'


def _testing_snippets():
    """Return the testing page's pytest files: {path: source}, by each block's first line or first test."""
    text = (ROOT / TESTING).read_text(encoding="utf-8")
    files = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        named = re.match(r"# (tests/\S+\.py)\n", block)
        if named:
            files[named.group(1)] = block
        elif block.startswith("def test_login_is_limited"):
            files["tests/test_login.py"] = block
    return files


def pytest_in(project, *args, env):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_the_testing_pages_pytest_tests_pass_in_the_tutorials_project(tmp_path, emulator):
    files = _testing_snippets()
    assert {"tests/test_profile.py", "tests/test_login.py", "tests/live/test_kv_live.py"} <= set(files)
    project = new_project(tmp_path, [TUTORIAL], emulator)
    (project / "mysite" / "urls.py").write_text(tutorial_urls() + PROFILE_PAGE)
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + IGNORE_EXCEPTIONS + "\n")
    (project / "mysite" / "live_settings.py").write_text('from .settings import *\n\nCFKV = {"default": {}}\n')
    (project / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = mysite.settings\n")
    for path, source in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(source)
    env = user_env(emulator)  # CFKV_NAMESPACE_ID is set: the live test runs, not skipped

    status, output = pytest_in(project, "tests", "--ignore=tests/live", env=env)
    assert status == 0 and "5 passed" in output, output
    # The live test against the tutorial's settings: CFKV names the local store, and the test says so.
    status, output = pytest_in(project, "tests/live", env=env)
    assert status == 1 and "the default CFKV alias is not Cloudflare's REST API" in output, output
    # As the page says to run it: CFKV's default alias from the environment (here the emulator stands in).
    status, output = pytest_in(project, "tests/live", "--ds=mysite.live_settings", env=env)
    assert status == 0 and "1 passed" in output, output
