import pytest

from django_cfkv import conf, nearcache
from django_cfkv.sessions import memory as session_memory
from tests.support.twins import as_mode, awaited, test_loop  # noqa: F401 (fixtures: the async twins, every folder)

# Every test fails if a secret or a session id it made shows in a log record, an error's text or a command's output.
pytest_plugins = ["tests.support.secret_sweep"]


@pytest.fixture(autouse=True)
def _fresh_clients():
    """Forget clients built from settings, near-cached values and deleted session keys, so no test sees another's."""
    conf.reset()
    nearcache.reset()
    session_memory.recently_deleted.clear()
    yield
    conf.reset()
    nearcache.reset()
    session_memory.recently_deleted.clear()
