"""manage.py cfkv errors: each says what to check, and no output ever holds the API token."""

import io

import pytest
from django.core.management.base import CommandError

from django_cfkv import get_kv
from tests.command.helpers import run, seed


def test_wrong_token_is_a_command_error_without_the_token(settings, cfkv_emulator):
    settings.CFKV = {"default": cfkv_emulator.alias_settings(API_TOKEN="wrong-secret-token-XYZ")}
    with pytest.raises(CommandError) as caught:
        run("ls")
    assert "API_TOKEN" in str(caught.value) and "wrong-secret-token-XYZ" not in str(caught.value)


def test_unreachable_server_says_what_to_check(settings, cfkv_emulator):
    settings.CFKV = {"default": cfkv_emulator.alias_settings(BASE_URL="http://127.0.0.1:9/client/v4",
                                                             MAX_RETRIES=0, TIMEOUT=2)}
    with pytest.raises(CommandError, match=r"Check CFKV\['default'\]\['BASE_URL'\]"):
        run("ping", "--read-only")


def test_unknown_alias_is_a_command_error(local_alias):
    with pytest.raises(CommandError, match="alias 'nope' is not configured"):
        run("ls", "--alias", "nope")


def test_rate_limited_says_what_to_do(emulated_alias, cfkv_emulator):
    with cfkv_emulator.faults(rate_429=1.0, retry_after=600):
        with pytest.raises(CommandError, match="Wait for the window"):
            run("ls")


def test_the_token_never_appears_in_any_output(settings, gateway):
    token = gateway.token
    settings.CFKV = {"default": {**gateway.settings(), "MAX_RETRIES": 0}}
    seed(get_kv())
    outputs = []
    for args in (["ls"], ["ls", "--json"], ["get", "session:live"], ["get", "blob", "--json"],
                 ["stats", "--sizes"], ["stats", "--json"], ["ping"], ["ping", "--json"],
                 ["sweep", "--dry-run"], ["sweep", "--json"], ["put", "k", "v"],
                 ["rm", "k", "--yes"], ["rm", "--prefix", "x", "--dry-run"]):
        err = io.StringIO()
        outputs += [run(*args, stderr=err), err.getvalue()]
    settings.CFKV = {"default": {**settings.CFKV["default"], "API_TOKEN": token + "-wrong"}}
    for args in (["ls"], ["ping"], ["get", "x"]):
        with pytest.raises(CommandError) as caught:
            run(*args)
        outputs.append(str(caught.value))
    assert outputs[0] and len(outputs) == 29
    assert not [text for text in outputs if token in text]
