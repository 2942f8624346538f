"""The API token never shows: not in logs (at DEBUG, urllib3's included),
exception text, tracebacks, reprs, or manage.py cfkv's output and errors."""

import io
import logging
import re
import traceback

import pytest
import responses
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_cfkv import conf, get_kv
from django_cfkv.client import KVClient
from django_cfkv.exceptions import CFKVConfigurationError, KVError
from tests.support.faults import ACCOUNT, BASE, NS

SECRET = "S3CRET-cfkv-token-do-not-print-7f3a9c"


def _texts(exc):
    """Every way an error is shown: str, repr, a formatted traceback with its causes."""
    return [str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]


def _assert_clean(*texts):
    for text in texts:
        assert SECRET not in text
        assert SECRET[:12] not in text  # not even a prefix of it


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "urllib3.connectionpool", "requests", "django_cfkv", "django"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _failing_calls(client):
    for call in (lambda: client.get("k"), lambda: client.put("k", b"v", metadata={"m": 1}),
                 lambda: client.get_many(["a"]), lambda: client.put_many([{"key": "a", "value": "v"}]),
                 lambda: client.list_keys()):
        with pytest.raises(KVError) as info:
            call()
        yield info.value


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
def test_api_errors_do_not_show_the_token(debug_logs, slept, status):
    client = KVClient(ACCOUNT, NS, SECRET, max_retries=1)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        for method in ("GET", "PUT", "POST"):
            api.add(method, re.compile(re.escape(BASE) + ".*"), status=status, json={
                "success": False, "errors": [{"code": 10000, "message": "Authentication error"}],
                "messages": [], "result": None})
        errors = list(_failing_calls(client))
    for error in errors:
        _assert_clean(*_texts(error))
    _assert_clean(debug_logs.text, repr(client), repr(client.transport))


@pytest.mark.parametrize("mode", ["silent", "reset", "closed"])
def test_connection_errors_do_not_show_the_token(debug_logs, listener, closed_port, slept, mode):
    base = (f"http://127.0.0.1:{closed_port}/client/v4" if mode == "closed" else listener(mode).base_url)
    client = KVClient(ACCOUNT, NS, SECRET, base_url=base, timeout=0.2, max_retries=1)
    for error in _failing_calls(client):
        _assert_clean(*_texts(error))
    _assert_clean(debug_logs.text)
    client.close()


@pytest.mark.parametrize("token", [SECRET + "\n", " " + SECRET, SECRET + "\r\n"])
def test_token_with_surrounding_whitespace_works_and_stays_hidden(emulator, debug_logs, token):
    """A token read from a file or env var with a newline is used as meant, not leaked."""
    client = KVClient(emulator.account_id, emulator.new_namespace_id(), token, base_url=emulator.base_url,
                      max_retries=0)
    with pytest.raises(KVError) as info:  # the emulator wants its own token: 403
        client.get("k")
    _assert_clean(*_texts(info.value), debug_logs.text)


@pytest.mark.parametrize("token", [SECRET + "\nX-Evil: 1", "S3CRET-\x00-inside", "S3CRET-\u20ac-euro"])
def test_token_no_header_can_carry_is_a_configuration_error_that_does_not_quote_it(token):
    with pytest.raises(CFKVConfigurationError) as info:
        KVClient(ACCOUNT, NS, token)
    for text in _texts(info.value):
        assert "S3CRET" not in text


def test_client_built_from_settings_hides_the_token(emulator):
    alias = {**emulator.alias_settings(), "API_TOKEN": SECRET}
    with override_settings(CFKV={"default": alias}):
        kv = get_kv()
        _assert_clean(repr(kv), repr(kv.transport), str(vars(kv)), repr(conf.alias_config("default").keys()))


# manage.py cfkv: output and errors.

COMMANDS = [
    ["ls"], ["ls", "--json"], ["get", "k"], ["get", "k", "--json"], ["put", "k", "v"], ["rm", "k", "--yes"],
    ["stats"], ["stats", "--json"], ["sweep"], ["sweep", "--json"], ["sweep", "--dry-run"], ["ping"],
    ["ping", "--json"], ["ping", "--read-only"],
]


def _run(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("cfkv", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), err.getvalue(), exc
    return out.getvalue(), err.getvalue(), None


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("where", ["wrong_token", "closed_port", "server_errors"])
def test_command_output_and_errors_never_show_the_token(emulator, closed_port, debug_logs, slept, where, args):
    alias = {**emulator.alias_settings(), "API_TOKEN": SECRET, "MAX_RETRIES": 1, "TIMEOUT": 1}
    if where == "closed_port":
        alias["BASE_URL"] = f"http://127.0.0.1:{closed_port}/client/v4"
    with override_settings(CFKV={"default": alias}):
        if where == "server_errors":
            emulator.app.token = None  # accept any token, then fail every call
            emulator.set_faults(rate_503=1.0)
        try:
            out, err, error = _run(*args)
        finally:
            emulator.app.token = emulator.token
    assert error is not None  # every one of these fails: the point is what the failure shows
    _assert_clean(out, err, *_texts(error), debug_logs.text)


@pytest.mark.parametrize("args", [["ping"], ["ping", "--json"], ["stats", "--json"], ["ls", "--json"],
                                  ["sweep", "--json"]], ids=" ".join)
def test_successful_command_output_never_shows_the_token(emulator, debug_logs, args):
    emulator.app.token = SECRET
    try:
        with override_settings(CFKV={"default": {**emulator.alias_settings(), "API_TOKEN": SECRET}}):
            out, err, error = _run(*args)
    finally:
        emulator.app.token = emulator.token
    assert error is None, error
    assert out
    _assert_clean(out, err, debug_logs.text)
