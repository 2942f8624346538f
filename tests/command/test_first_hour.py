"""manage.py cfkv as a new user meets it: what it says must be true of the store it talks to."""

import argparse
import io
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from django.core.management import ManagementUtility

from django_cfkv import get_kv
from django_cfkv.management.commands.cfkv import Command as Cfkv
from tests.command.helpers import run, run_json, seed

DOCS = Path(__file__).resolve().parents[2] / "docs"
JSON_SCHEMA_DOCS = "https://django-cfkv.readthedocs.io/en/latest/reference/command.html"


def manage(*argv):
    """Run ``manage.py *argv`` as a shell would; return (exit status, stdout + stderr)."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        try:
            ManagementUtility(["manage.py", *argv]).execute()
        except SystemExit as exc:
            return exc.code, out.getvalue()
    return 0, out.getvalue()


def test_get_through_the_gateway_shows_the_expiry_ls_shows(settings, gateway, cfkv_calls):
    settings.CFKV = {"default": {**gateway.settings(), "MAX_RETRIES": 0}}
    get_kv().put("note", "expiring", expiration_ttl=120)
    listed = run_json("ls", "--prefix", "note")["keys"][0]["expires"]
    cfkv_calls.reset()
    shown = run_json("get", "note")
    assert listed is not None and shown["expires"] == listed and abs(listed - (time.time() + 120)) < 30
    assert "expires:   never" not in run("get", "note")
    assert cfkv_calls.counts.get("list", 0) <= 2  # one listing per get, only when the answer stated no expiry
    get_kv().put("forever", "stays")
    assert run_json("get", "forever")["expires"] is None


@pytest.mark.parametrize("argv", [["--skip-checks", "ping"], ["ping", "--skip-checks"],
                                  ["ping", "--read-only", "--skip-checks"]])
def test_skip_checks_works_before_or_after_the_subcommand(argv, local_alias, settings):
    settings.SESSION_CFKV_FORMAT = "JSON"  # a check error: without --skip-checks the command stops on it
    status, output = manage("cfkv", "ping", "--read-only")
    assert status == 1 and "django_cfkv.E202" in output
    status, output = manage("cfkv", *argv)
    assert status == 0, output
    assert "E202" not in output


def _leaf_parsers(parser, argv=()):
    """Yield (argv, parser) for every subcommand and gateway action of ``parser``."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield argv, parser
    for action in subparsers:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, (*argv, name))


def test_every_subcommand_takes_skip_checks_after_it():
    parser = Cfkv().create_parser("manage.py", "cfkv")
    leaves = dict(_leaf_parsers(parser))
    assert ("sessions",) in leaves and ("gateway", "init") in leaves
    missing = [" ".join(argv) for argv, leaf in leaves.items()
               if "--skip-checks" not in leaf._option_string_actions]
    assert missing == []


def test_stats_on_the_embedded_store_speaks_of_no_api_calls(local_alias):
    seed(local_alias)
    text = run("stats")
    assert "--sizes reads those values" in text and "API" not in text
    assert "API" not in run("stats", "--sizes")


def test_stats_on_the_rest_api_names_the_calls_sizes_cost(emulated_alias):
    seed(emulated_alias)
    assert "about 1 API call per 100 keys" in run("stats")


def test_json_help_points_at_the_page_that_describes_it(local_alias):
    status, output = manage("cfkv", "ls", "--help")
    assert status == 0 and "README" not in output
    assert JSON_SCHEMA_DOCS in "".join(output.split())  # argparse wraps the help, at hyphens too
    page = JSON_SCHEMA_DOCS.split("/latest/")[1].replace(".html", ".md")
    assert "--json" in (DOCS / page).read_text(encoding="utf-8")
