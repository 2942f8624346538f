"""Run example_project/ as a user does: ``manage.py runserver`` in its own process.

The end-to-end tests drive that process over HTTP (and through a browser),
stop it and start it again, and look at the KV namespace behind it.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
# The browser test's screenshots of each page: CI keeps this folder (git-ignored).
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
SCREENSHOTS_TAKEN = pytest.StashKey[bool]()
MANAGE = ROOT / "example_project" / "manage.py"
DEMO_USER = ("demo", "cfkv-demo")
DEMO_CREDENTIALS = {"username": DEMO_USER[0], "password": DEMO_USER[1]}

# Variables that would send the site somewhere else than the test chose.
_SCRUBBED = ("DJANGO_SETTINGS_MODULE", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN",
             "CLOUDFLARE_BASE_URL", "CFKV_NAMESPACE_ID", "EXAMPLE_DATA_DIR", "EXAMPLE_SLOW_SECONDS",
             "EXAMPLE_KV_TIMEOUT", "EXAMPLE_KV_MAX_RETRIES")


def free_port():
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def site_env(data_dir, **extra):
    """Return the environment for the example site with its data in ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(EXAMPLE_DATA_DIR=str(data_dir), EXAMPLE_SLOW_SECONDS="0.3", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def manage(env, *args, timeout=60):
    """Run ``example_project/manage.py`` with ``args``; return its stdout, or fail with its output."""
    result = subprocess.run([sys.executable, str(MANAGE), *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise AssertionError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result.stdout


def emulator_env(emulator, namespace_id):
    """Return the variables that point the site at ``emulator``'s namespace ``namespace_id``."""
    return {"CLOUDFLARE_BASE_URL": emulator.base_url, "CLOUDFLARE_ACCOUNT_ID": emulator.account_id,
            "CLOUDFLARE_API_TOKEN": emulator.token, "CFKV_NAMESPACE_ID": namespace_id}


class Site:
    """The example site served by ``runserver --noreload`` on a free loopback port."""

    def __init__(self, data_dir, template_db=None, **env):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = site_env(self.data_dir, **env)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "runserver.log"
        self.process = None
        if template_db is not None:
            shutil.copy(template_db, self.data_dir / "db.sqlite3")
        else:
            manage(self.env, "migrate", "--noinput")
            manage(self.env, "demo_user")

    def url(self, path="/"):
        return self.base_url + path

    def command(self):
        """Return the command that serves the site on ``self.port``."""
        return [sys.executable, str(MANAGE), "runserver", "--noreload", f"127.0.0.1:{self.port}"]

    def start(self, timeout=30):
        """Start the server and return once it answers."""
        log = open(self.log_path, "a")  # closed by stop()
        self.process = subprocess.Popen(self.command(), env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.process.log = log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._close_log()
                raise AssertionError(f"{self.command()[2]} exited with {self.process.returncode}:\n{self.log()}")
            try:
                requests.get(self.url("/api/"), timeout=2)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.command()[2]} did not answer within {timeout} s:\n{self.log()}")

    def stop(self):
        """Stop the server process (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._close_log()
        self.process = None

    def restart(self):
        self.stop()
        return self.start()

    def _close_log(self):
        self.process.log.close()

    def log(self):
        """Return what the server printed (for failure messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Browser(requests.Session):
    """A requests.Session (cookies and all) that opens a new connection for each request.

    runserver writes a response in two pieces; on a kept-alive connection the
    second waits for the client's delayed ACK, ~40 ms a request.
    """

    def request(self, *args, **kwargs):
        try:
            return super().request(*args, **kwargs)
        finally:
            self.close()  # the pooled connection; the cookies stay


def serve_on_emulator(emulator, example_db, data_dir, **env):
    """Start the example site on a fresh namespace of ``emulator``; ``site.kv`` reads that namespace."""
    namespace_id = emulator.new_namespace_id()
    site = Site(data_dir, template_db=example_db, **emulator_env(emulator, namespace_id), **env)
    site.kv = emulator.client(namespace_id)
    site.start()
    return site


def stop_site(site):
    site.stop()
    site.kv.close()


def element_text(html, element_id):
    """Return the text inside the element with ``element_id`` (tags stripped), or None."""
    match = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', html, re.S)
    return None if match is None else re.sub(r"<[^>]+>", "", match.group(1)).strip()


def csrf_token(html):
    """Return the CSRF token of the first form in ``html``."""
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def post_login(session, site, username, password):
    """Submit the login form as a browser would; return the final response."""
    page = session.get(site.url("/login/"), timeout=10)
    return session.post(site.url("/login/"), timeout=10, data={
        "username": username, "password": password, "csrfmiddlewaretoken": csrf_token(page.text)})
