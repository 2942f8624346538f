"""The example site in a real browser: headless Chromium (Debian's package) driven by Selenium.

Chromium and its driver come from the system (``apt-get install chromium
chromium-driver``), never from a download: the driver path is given to
Selenium and SE_OFFLINE keeps Selenium Manager from fetching anything. When
they are missing the test is skipped locally, and fails when ``CI`` is set.

Every page of the walk is photographed at a desktop and a phone width into
``test-artifacts/screenshots/`` (CI keeps the folder; the run's summary names
it), and checked there: no wider than the window, no raw epoch seconds in
the text, a header of the same height signed in or out.
"""

import contextlib
import os
import re
import shutil

import pytest

from .sites import DEMO_USER, SCREENSHOTS, SCREENSHOTS_TAKEN, Site, emulator_env

WIDTHS = (1280, 390)  # a laptop, a phone
EPOCH = re.compile(r"\b\d{10}\b")  # epoch seconds from 2001 to 2286

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
    "--hide-scrollbars",  # so that innerWidth is the width the page has to fit in
)
INSTALL_HINT = ("install them with `apt-get install -y chromium chromium-driver` and "
                "`pip install selenium` (or set CHROMIUM and CHROMEDRIVER to their paths)")


def unavailable(reason):
    """Skip locally; fail in CI, where the browser test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"The browser end-to-end test cannot run in CI: {reason}; {INSTALL_HINT}.", pytrace=False)
    pytest.skip(f"{reason}; {INSTALL_HINT} (in CI this fails instead of skipping)")


@contextlib.contextmanager
def chromium(profile):
    """Start headless Chromium with its own profile folder (its own cookies): one browser of one person."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed")
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver:
        unavailable(f"Chromium ({binary or 'not found'}) or chromedriver ({driver or 'not found'}) is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "1")  # Selenium Manager must never download a browser or driver
    with chromium(tmp_path / "chromium-profile") as chrome:
        yield chrome


@pytest.fixture
def second_browser(tmp_path, monkeypatch):
    """Another browser, with cookies of its own: the same person on another device."""
    monkeypatch.setenv("SE_OFFLINE", "1")
    with chromium(tmp_path / "second-chromium-profile") as chrome:
        yield chrome


# The text a person reads: visible text nodes, outside the stored JSON shown as it is (class "json").
VISIBLE_TEXT = """
const parts = [], walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (!node.parentElement.closest(".json, script, style, [hidden]")) parts.push(node.textContent);
}
return parts.join(" ");
"""


class Page:
    """What the test does with the browser: open, read by id, fill in forms, look at the page."""

    def __init__(self, browser, site):
        self.browser, self.site = browser, site
        self.problems = []  # what capture() found wrong, reported together at the end
        self.header_heights = {width: set() for width in WIDTHS}

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

    def messages(self):
        """Return the Django messages shown on the page."""
        from selenium.webdriver.common.by import By

        return [item.text for item in self.browser.find_elements(By.CSS_SELECTOR, "#messages li")]

    def capture(self, name):
        """Screenshot the whole page at each of WIDTHS and note what is wrong with it."""
        metrics = {"height": 900, "deviceScaleFactor": 1, "mobile": False}
        text = self.browser.execute_script(VISIBLE_TEXT)
        for number in EPOCH.findall(text):
            self.problems.append(f"{name}: raw epoch seconds {number} in the text")
        try:
            for width in WIDTHS:
                self.browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", dict(metrics, width=width))
                scroll_width, inner_width, height, header = self.browser.execute_script(
                    "const root = document.documentElement; return [root.scrollWidth, innerWidth, "
                    "root.scrollHeight, document.querySelector('header').offsetHeight];")
                if scroll_width > inner_width:
                    self.problems.append(f"{name} at {width} px: the page is {scroll_width} px wide")
                self.header_heights[width].add(header)
                self.browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                             dict(metrics, width=width, height=min(height, 8000)))
                self.browser.save_screenshot(str(SCREENSHOTS / f"{name}-{width}.png"))
        finally:
            self.browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

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


def test_walk_the_example_site(browser, cfkv_emulator, example_db, tmp_path, request):
    """Each demo makes its point on the page (messages, tries left, a countdown), and every page reads
    well at both widths: sessions survive a restart, login is limited, logout deletes the session."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    request.config.stash[SCREENSHOTS_TAKEN] = True
    namespace_id = cfkv_emulator.new_namespace_id()
    site = Site(tmp_path / "site", template_db=example_db, **emulator_env(cfkv_emulator, namespace_id))
    kv = cfkv_emulator.client(namespace_id)
    page = Page(browser, site)
    site.start()
    try:
        page.open("/")
        assert page.text("visits") == "1"
        anonymous_id = page.text("session-key").rstrip("…")
        page.capture("home-anonymous")

        page.open("/login/")
        assert "5 times per clock minute" in page.text("login-limit")  # from the limiter's own rule
        page.capture("login")

        page.log_in(*DEMO_USER)
        assert page.text("username") == DEMO_USER[0]
        assert page.text("visits") == "2"  # login keeps the session's data under a new key
        signed_in_id = page.text("session-key").rstrip("…")
        [message] = page.messages()
        assert f"{anonymous_id}… is now {signed_in_id}…" in message and "1 visit so far" in message
        session_id = browser.get_cookie("sessionid")["value"]
        assert session_id.startswith(signed_in_id) and session_id not in browser.page_source  # only its start
        kv_key = page.text("kv-key")
        assert kv_key.startswith("session:")
        assert kv.get_metadata(kv_key)["kind"] == "session"
        page.capture("home")

        page.open("/slow/")
        page.open("/slow/")
        assert page.text("cache-status") == "hit"
        page.capture("cache-hit")
        page.click_and_wait("invalidate")
        assert page.text("cache-status") == "miss"
        assert any(m.startswith("Forgot the cached report") for m in page.messages())
        page.capture("cache-forgotten")

        page.open("/api/")
        page.capture("api")

        # Stop and start the server: the session lives in KV, not in the process.
        site.restart()
        page.open("/")
        assert page.text("username") == DEMO_USER[0]
        assert page.text("kv-key") == kv_key
        assert page.text("visits") == "3"

        check_login_limit(page)
        page.capture("429")
        check_countdown(page)

        page.open("/namespace/")
        assert page.find("expiry-lt_1h") is not None and page.find("rate-limits") is not None
        page.capture("namespace")

        page.open("/")
        assert page.text("username") == DEMO_USER[0]  # failed logins leave the session alone
        page.click_and_wait("logout")
        assert page.find("login-link") is not None
        assert "Signed out: your session was deleted from KV." in page.messages()
        assert kv.get(kv_key) is None, "logging out must delete the session from KV"
    except Exception:
        print(site.log())
        raise
    finally:
        site.stop()
        kv.close()
    for width, heights in page.header_heights.items():
        if len(heights) > 1:
            page.problems.append(f"at {width} px the header's height changes between pages: {sorted(heights)}")
    assert not page.problems, "\n".join(page.problems) + f"\nscreenshots: {SCREENSHOTS}"


def test_sign_out_another_browser_from_your_sessions(browser, second_browser, cfkv_emulator, example_db, tmp_path):
    """Signed in from two browsers, the first signs the second out on "Your sessions": the second is signed out
    at its next page, the first is not."""
    from django_cfkv.sessions import hashed_id

    site = Site(tmp_path / "site", template_db=example_db,
                **emulator_env(cfkv_emulator, cfkv_emulator.new_namespace_id()))
    laptop, phone = Page(browser, site), Page(second_browser, site)
    site.start()
    try:
        laptop.log_in(*DEMO_USER)
        phone.log_in(*DEMO_USER)
        assert phone.text("username") == DEMO_USER[0]
        laptop.click_and_wait("sessions-link")
        phone_ref = hashed_id(second_browser.get_cookie("sessionid")["value"])
        laptop_ref = hashed_id(browser.get_cookie("sessionid")["value"])
        assert "This session" in laptop.text(f"session-{laptop_ref[:12]}")
        assert laptop.find(f"sign-out-{laptop_ref[:12]}") is None  # this one is signed out with "Log out"
        assert "Headless Chrome on Linux" in laptop.text(f"session-{phone_ref[:12]}")
        laptop.capture("sessions")
        laptop.click_and_wait(f"sign-out-{phone_ref[:12]}")
        assert laptop.text("sessions-signed-out").startswith("Signed out of 1 session.")
        assert laptop.find(f"session-{phone_ref[:12]}") is None
        laptop.capture("sessions-signed-out")
        phone.open("/")
        assert phone.find("login-link") is not None and phone.find("username") is None
        laptop.open("/")
        assert laptop.text("username") == DEMO_USER[0]
    except Exception:
        print(site.log())
        raise
    finally:
        site.stop()
    assert not laptop.problems, "\n".join(laptop.problems) + f"\nscreenshots: {SCREENSHOTS}"


def check_login_limit(page):
    """Fail to log in until the 429: each refusal's "tries left" must be what the limiter then does."""
    said = None  # (tries left, seconds to the window's end) on the last refusal
    for attempt in range(12):
        page.log_in(DEMO_USER[0], "wrong password")
        if page.find("ratelimited"):
            break
        assert page.text("login-error") == "Wrong username or password."
        left, reset = int(page.text("tries-left")), int(page.text("tries-reset"))
        assert 0 <= left <= 4 and 1 <= reset <= 60
        if said is not None and reset <= said[1]:  # the same window: one try fewer
            assert left == said[0] - 1, (said, left)
        said = (left, reset)
        if attempt == 0:
            page.capture("login-refused")
    else:
        pytest.fail("twelve login attempts within a few seconds were never refused with a 429")
    assert said is not None, "a 429 before any refusal said how many tries were left"
    assert said[0] == 0, f"the form said {said[0]} tries were left, and the next try got a 429"
    assert page.text("ratelimited") == "Too many requests"


def check_countdown(page):
    """The 429 page counts Retry-After down, and offers the way back to the form."""
    from selenium.webdriver.support.ui import WebDriverWait

    start = int(page.text("retry-after"))
    assert 1 <= start <= 60
    assert page.find("back").get_attribute("href") == page.site.url("/login/")
    # One tick down, or the wait over (the count then hides, and a hidden element's .text is ""): read
    # textContent, which hidden elements keep. A loaded machine may run the page's timer late.
    WebDriverWait(page.browser, 15).until(
        lambda _: page.find("ready").is_displayed()
        or int(page.find("retry-after").get_attribute("textContent")) < start)
