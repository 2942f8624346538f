"""What a namespace writer stores never drives the operator's terminal: ``manage.py cfkv`` shows it escaped.

A key name or a value is whatever a Worker, another site or anyone with the namespace's token
wrote; an operator runs ``ls``, ``get``, ``rm --dry-run`` and ``stats`` on it. Printed raw, an
escape sequence could set their clipboard (OSC 52), clear the screen or hide a line, and a
carriage return or a bidi override could make one key read as another.
"""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.command.helpers import run

# Each one acts on a terminal or on how a line reads: OSC 52 (set the clipboard), clear the screen,
# the C1 CSI, a carriage return, a newline, a bidi override, DEL, a line separator, a tag character.
HOSTILE = "k\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x9b31m\r\n\u202eab\x7f\u2028\U000e0041"
SHOWN = r"k\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x9b31m\r\n\u202eab\x7f\u2028\U000e0041"


def assert_inert(output):
    """Every character printable, but the newlines that end lines."""
    bad = sorted({char for char in output if not char.isprintable() and char != "\n"})
    assert not bad, f"characters a terminal acts on reached the output: {bad!r}"


@pytest.fixture
def planted(kv):
    kv.put(HOSTILE, f"value of {HOSTILE}", metadata={"kind": "cache", "size": 40, "note": HOSTILE})
    kv.put("page", json.dumps({"title": HOSTILE}, ensure_ascii=False))  # a JSON value holding the same text
    return kv


def test_ls_shows_a_planted_key_escaped(planted):
    output = run("ls")
    assert_inert(output)
    assert SHOWN in output


def test_get_shows_a_planted_key_and_value_escaped(planted):
    output = run("get", HOSTILE)
    assert_inert(output)
    assert f"key:       {SHOWN}" in output
    assert "value of " + SHOWN.replace(r"\n", "\n") in output  # a value keeps its own lines
    assert_inert(run("get", "page"))


def test_a_value_keeps_its_own_lines_and_tabs(kv):
    kv.put("note", "line one\n\tline two")
    assert run("get", "note").endswith("value:\nline one\n\tline two\n")


def test_rm_dry_run_and_stats_show_planted_keys_escaped(planted):
    output = run("rm", "--prefix", "k", "--dry-run")
    assert_inert(output)
    assert SHOWN in output
    output = run("stats", "--top", "5")
    assert_inert(output)
    assert SHOWN in output


@pytest.mark.parametrize("args", [("ls",), ("get", HOSTILE), ("get", "page"), ("stats", "--top", "5")])
def test_json_output_escapes_the_same_text_and_still_reads_back_exact(planted, args):
    output = run(*args, "--json")
    assert_inert(output)
    assert any(HOSTILE in text for text in strings(json.loads(output)))  # the exact text, every character kept


def strings(data):
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from strings(value)


class TerminalBytes(io.BytesIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("value", [b"\x1b]52;c;cm0gLXJmIH4=\x07", b"\xff\xfe binary", "\u202eab".encode()])
def test_get_raw_writes_to_a_terminal_only_what_it_cannot_act_on(kv, value):
    kv.put("blob", value)
    terminal = TerminalBytes()
    stdout = io.TextIOWrapper(terminal, encoding="utf-8")
    with pytest.raises(CommandError, match="> value.bin"):
        call_command("cfkv", "get", "blob", "--raw", stdout=stdout)
    assert terminal.getvalue() == b""
    kv.put("text", "plain text,\n\tand more\n")
    call_command("cfkv", "get", "text", "--raw", stdout=stdout)
    assert terminal.getvalue() == b"plain text,\n\tand more\n"
    piped = io.BytesIO()  # not a terminal: the bytes, unchanged
    stdout = io.TextIOWrapper(piped, encoding="utf-8")
    call_command("cfkv", "get", "blob", "--raw", stdout=stdout)
    assert piped.getvalue() == value
