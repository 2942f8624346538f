"""The fault matrix on sessions: load, save and create under each of Cloudflare's documented failures
(tests/support/faults.py). A load follows SESSION_CFKV_ON_LOAD_ERROR (logged); writes always raise;
acknowledged saves load back once the fault clears.
"""

import contextlib
import logging

import pytest
from django.contrib.sessions.backends.base import UpdateError

from django_cfkv.exceptions import KVError
from django_cfkv.sessions import SessionStore
from tests.support.faults import RETRY, warned


@pytest.fixture
def session_settings(settings):
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    settings.SESSION_CFKV_ALIAS = "faulty"
    return settings


@pytest.mark.parametrize("on_error", ["empty", "raise"])
def test_session_load_under_fault(fault, session_settings, caplog, tmp_path, on_error):
    key = "a" * 32
    session_settings.SESSION_CFKV_ON_LOAD_ERROR = on_error
    # The same session in a namespace that answers (alias "healthy"), for once the fault is over.
    session_settings.CFKV = {**session_settings.CFKV, "healthy": {"BACKEND": "local", "PATH": str(tmp_path / "kv")}}
    with use_alias(session_settings, "healthy"):
        SessionStore(key).save(must_create=True)  # a session under the key this test picks
        stored = SessionStore(key)
        stored["cart"] = [1, 2]
        stored.save()
    store = SessionStore(key)
    if fault in ("malformed_200", "success_false_200"):
        # The value read answered 200 with bytes that are no session: a tampered session, empty.
        assert store.load() == {} and not store.load_failed
        return
    if on_error == "raise":
        with pytest.raises(KVError):
            store.load()
        return
    caplog.set_level(logging.ERROR)
    assert store.load() == {}
    assert store.load_failed and store.session_key == key  # the cookie is kept
    assert warned(caplog, "django_cfkv.sessions")
    store["changed"] = True
    with use_alias(session_settings, "healthy"):  # KV answers again: only the load failed
        with pytest.raises(KVError, match="not saved"):  # never overwrite the stored session with the stand-in
            store.save()
        assert SessionStore(key).load() == {"cart": [1, 2]}


@contextlib.contextmanager
def use_alias(settings, alias):
    """Keep sessions in CFKV alias ``alias`` inside the block."""
    before = settings.SESSION_CFKV_ALIAS
    settings.SESSION_CFKV_ALIAS = alias
    try:
        yield
    finally:
        settings.SESSION_CFKV_ALIAS = before


@pytest.mark.parametrize("op", ["save", "create"])
def test_session_writes_under_fault_always_raise(fault, session_settings, op):
    store = SessionStore()
    store["cart"] = [1, 2, 3]
    with pytest.raises((KVError, UpdateError)):
        store.save() if op == "save" else store.create()


def test_session_acknowledged_saves_load_back_after_random_faults(session_settings, emulator, slept):
    session_settings.CFKV = {**session_settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY}}
    emulator.set_faults(rate_503=0.3, rate_429=0.1, retry_after=0)
    acked, raised = {}, 0
    for i in range(60):
        store = SessionStore()
        store["n"] = i
        try:
            store.save()
        except KVError:
            raised += 1
        else:
            acked[store.session_key] = i
    emulator.clear_faults()
    assert raised and acked
    for key, n in acked.items():
        assert SessionStore(key).load() == {"n": n}


def test_a_logout_after_a_failed_load_starts_a_session_that_is_written(emu, caplog):
    """A view that signs out while KV failed at load, then stores new data: the new session is written."""
    key = "a" * 32
    SessionStore(key).save(must_create=True)
    store = SessionStore(key)
    with emu.faults(rate_503=1.0), caplog.at_level(logging.ERROR):
        assert store.load() == {} and store.load_failed
    store.flush()  # logout(): the stored session is deleted, the stand-in forgotten
    store["theme"] = "dark"
    store.save()  # a new key, with nothing stored under it to overwrite
    assert store.session_key not in (None, key)
    assert SessionStore(store.session_key).load() == {"theme": "dark"}
    assert not SessionStore().exists(key)
