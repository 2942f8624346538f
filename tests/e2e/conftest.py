"""Fixtures that run the example site in its own process, on the emulator or on LocalKV."""

import pytest

from .sites import SCREENSHOTS, SCREENSHOTS_TAKEN, manage, serve_on_emulator, site_env, stop_site


def pytest_terminal_summary(terminalreporter, config):
    if config.stash.get(SCREENSHOTS_TAKEN, False):
        terminalreporter.write_line(f"Screenshots of the example site's pages: {SCREENSHOTS}")


@pytest.fixture(scope="session")
def example_db(tmp_path_factory):
    """A migrated database with the demo user, copied by every site (migrating once saves seconds)."""
    data_dir = tmp_path_factory.mktemp("example-db")
    env = site_env(data_dir)
    manage(env, "migrate", "--noinput")
    manage(env, "demo_user")
    return data_dir / "db.sqlite3"


@pytest.fixture(scope="module")
def emulator_site(cfkv_emulator, example_db, tmp_path_factory):
    """The example site on a fresh emulator namespace; ``site.kv`` reads that namespace directly."""
    site = serve_on_emulator(cfkv_emulator, example_db, tmp_path_factory.mktemp("example"))
    yield site
    stop_site(site)


@pytest.fixture(autouse=True)
def _fresh_api_window(cfkv_emulator):
    """Start and leave each test with a fresh simulated 5-minute API window on the shared emulator.

    A walk of the site makes more calls than one window allows, and clients
    read its Ratelimit header: a spent window would make a 429 look like the
    account's quota to this test and to the next.
    """
    cfkv_emulator.reset_quota()
    yield
    cfkv_emulator.reset_quota()
