"""The example site in a real browser: headless Chromium (Debian's package) driven by Selenium.

Chromium and its driver come from the system (``apt-get install chromium
chromium-driver``), never from a download: the driver path is given to
Selenium and SE_OFFLINE keeps Selenium Manager from fetching anything. When
they are missing the test is skipped locally, and fails when ``CI`` is set.
"""

import os
import shutil

import pytest

from .sites import DEMO_USER, Site, emulator_env

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1200,900",
)
INSTALL_HINT = ("install them with `apt-get install -y chromium chromium-driver` and "
                "`pip install selenium` (or set CHROMIUM and CHROMEDRIVER to their paths)")


def unavailable(reason):
    """Skip locally; fail in CI, where the browser test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"The browser end-to-end test cannot run in CI: {reason}; {INSTALL_HINT}.", pytrace=False)
    pytest.skip(f"{reason}; {INSTALL_HINT} (in CI this fails instead of skipping)")


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "1")  # Selenium Manager must never download a browser or driver
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        unavailable(f"Chromium ({chromium or 'not found'}) or chromedriver ({driver or 'not found'}) is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


class Page:
    """What the test does with the browser: open, read by id, fill in forms."""

    def __init__(self, browser, site):
        self.browser, self.site = browser, site

    def open(self, path):
        self.browser.get(self.site.url(path))
        self.wait_ready()

    def wait_ready(self):
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.browser, 20).until(
            lambda browser: browser.execute_script("return document.readyState") == "complete")

    def find(self, element_id):
        from selenium.webdriver.common.by import By

        found = self.browser.find_elements(By.ID, element_id)
        return found[0] if found else None

    def text(self, element_id):
        element = self.find(element_id)
        assert element is not None, f"no #{element_id} on {self.browser.current_url}:\n{self.browser.page_source}"
        return element.text

    def click_and_wait(self, element_id):
        """Click an element that submits a form; return once the next page has loaded."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        for attempt in range(3):
            old = self.browser.find_element(By.TAG_NAME, "html")
            try:
                self.find(element_id).click()
                break
            except WebDriverException as exc:
                # Chromium can still be swapping documents after a load: find the element again.
                if attempt == 2 or not _detached(exc):
                    raise
                self.wait_ready()
        WebDriverWait(self.browser, 20).until(lambda browser: _gone(old))
        self.wait_ready()

    def log_in(self, username, password):
        self.open("/login/")
        self.find("id_username").send_keys(username)
        self.find("id_password").send_keys(password)
        self.click_and_wait("login-submit")


def _detached(exc):
    """Whether a WebDriver error says the element's document is gone. Chromium says so either as
    StaleElementReferenceException or as "Node with given id does not belong to the document"."""
    from selenium.common.exceptions import StaleElementReferenceException

    return isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc)


def _gone(element):
    """Return True once ``element``'s page has been replaced."""
    from selenium.common.exceptions import WebDriverException

    try:
        element.is_enabled()
    except WebDriverException as exc:
        if _detached(exc):
            return True
        raise
    return False


def test_session_survives_restart_login_is_limited_logout_deletes_session(
        browser, cfkv_emulator, example_db, tmp_path):
    namespace_id = cfkv_emulator.new_namespace_id()
    site = Site(tmp_path / "site", template_db=example_db, **emulator_env(cfkv_emulator, namespace_id))
    kv = cfkv_emulator.client(namespace_id)
    page = Page(browser, site)
    site.start()
    try:
        page.open("/")
        assert page.text("visits") == "1"

        page.log_in(*DEMO_USER)
        assert page.text("username") == DEMO_USER[0]
        assert page.text("visits") == "2"  # login keeps the session's data under a new key
        kv_key = page.text("kv-key")
        assert kv_key.startswith("session:")
        assert kv.get_metadata(kv_key)["kind"] == "session"

        # Stop and start the server: the session lives in KV, not in the process.
        site.restart()
        page.open("/")
        assert page.text("username") == DEMO_USER[0]
        assert page.text("kv-key") == kv_key
        assert page.text("visits") == "3"

        # 5 login POSTs a minute per address: the 6th (or, across a window edge, a later one) is refused.
        for _attempt in range(12):
            page.log_in(DEMO_USER[0], "wrong password")
            if page.find("ratelimited"):
                break
            assert page.text("login-error") == "Wrong username or password."
        assert page.text("ratelimited") == "Too many requests"
        assert 1 <= int(page.text("retry-after")) <= 60

        page.open("/")
        assert page.text("username") == DEMO_USER[0]  # failed logins leave the session alone
        page.click_and_wait("logout")
        assert page.find("login-link") is not None
        assert kv.get(kv_key) is None, "logging out must delete the session from KV"
    except Exception:
        print(site.log())
        raise
    finally:
        site.stop()
        kv.close()
