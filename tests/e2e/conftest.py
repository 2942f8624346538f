"""Fixtures that run the example site in its own process, on the emulator or on LocalKV."""

import pytest

from .sites import manage, serve_on_emulator, site_env, stop_site


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
