"""The example's template filters: what KV stores, shown the way a person reads it."""

import importlib.util
from datetime import datetime, timezone

import pytest

from .sites import ROOT


def _load():
    path = ROOT / "example_project" / "demo" / "templatetags" / "demo_format.py"
    spec = importlib.util.spec_from_file_location("demo_format", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fmt = _load()
NOW = 1_796_133_352.0


@pytest.mark.parametrize(("offset", "said"), [
    (0.2, "now"), (3, "in 3 s"), (-3, "3 s ago"), (59.4, "in 59 s"), (59.6, "in 1 min"),
    (-13 * 60, "13 min ago"), (5 * 3600, "in 5 h"), (86399, "in 1 day"), (6.99 * 86400, "in 1 week"),
    (14 * 86400 - 60, "in 2 weeks"), (60 * 86400, "in 2 months"), (-400 * 86400, "1 year ago"),
])
def test_relative_times_round_to_the_largest_fitting_unit(offset, said):
    assert fmt.relative(datetime.fromtimestamp(NOW + offset, timezone.utc), NOW) == said


def test_when_gives_the_exact_time_in_the_tooltip():
    html = fmt.when(NOW)
    assert 'datetime="2026-12-01T13:55:52Z"' in html and 'title="2026-12-01 13:55:52 UTC"' in html


@pytest.mark.parametrize("written", [float("nan"), float("inf"), 1e20, True, "1796133352", None, [1]])
def test_a_namespace_writer_cannot_break_a_page_with_an_odd_expiry(written):
    assert fmt.when(written) == "unknown"
    assert fmt.exact_time(written) == ""


def test_keys_wrap_after_separators_and_stay_escaped():
    assert str(fmt.breakable("rl:<b>/x.y")) == "rl:<wbr>&lt;b&gt;/<wbr>x.<wbr>y"


@pytest.mark.parametrize(("value", "whole", "percent"), [
    (13, 10, 100), (3, 10, 30), (0, 10, 0), (5, 0, 0), ("x", 10, 0), (float("nan"), 1, 0), (-4, 10, 0),
])
def test_bars_stay_between_empty_and_full(value, whole, percent):
    assert fmt.percent(value, whole) == percent
