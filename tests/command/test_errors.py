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


def test_a_value_that_is_not_utf8_text_is_a_command_error_that_writes_nothing(local_alias):
    with pytest.raises(CommandError, match="valid UTF-8"):
        run("put", "k", "\udcff")  # a byte of a non-UTF-8 argument, as Python decodes argv
    assert get_kv().get("k") is None


def test_a_session_id_the_operator_types_is_never_echoed_whole(local_alias):
    key = "session:k3x9w2m8q7v1p0z5r4t6y8u2i1o3a5s7"  # a usable id, as the plain layout stores it
    outputs = [run("put", key, "v"), run("ls", "--prefix", key), run("ls", "--prefix", key, "--json"),
               run("stats", "--prefix", key), run("stats", "--prefix", key, "--json"),
               run("rm", "--prefix", key, "--dry-run")]
    for output in outputs:
        assert "session:k3x9…" in output and "k3x9w2m8" not in output, output
    almost = "session:1b4e28ba-2fa1-41d2-883f-0016d3cca427"[:-1]  # a Worker's id but its last digit
    for output in (run("ls", "--prefix", almost, "--json"), run("stats", "--prefix", almost)):
        assert "session:1b4e…" in output and "1b4e28ba" not in output, output
