"""The pytest plugin and unittest helpers, exercised as a user's project would use them."""

from pathlib import Path

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).parent / "plugin_examples"


def _project(pytester, *examples):
    """Lay out a small project in pytester's folder: settings plus the given example test files."""
    # --ds, not the ini file: pytest-django prefers the outer run's $DJANGO_SETTINGS_MODULE to the ini.
    pytester.makeini("[pytest]\npythonpath = .\naddopts = -p no:cacheprovider --ds=example_settings\n")
    pytester.makepyfile(example_settings=(EXAMPLES / "settings.py").read_text())
    for name in examples:
        pytester.makepyfile(**{f"test_{name}": (EXAMPLES / f"{name}.py").read_text()})


def test_fixtures(pytester):
    _project(pytester, "fixtures")
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=8)


def test_unittest_helpers(pytester):
    _project(pytester, "unittest_style")
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=5)


def test_loopback_guard_cannot_be_swallowed(pytester):
    _project(pytester, "swallowed")
    result = pytester.runpytest_subprocess()
    # The caught block is reported at teardown; the uncaught one once, as the test's failure.
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*_ ERROR at teardown of test_swallows_the_block _*",
        "E *KVNetworkBlocked: 1 KV API call(s) to api.cloudflare.com were stopped during this test*",
        "*_ test_lets_the_block_through _*",
        "E *KVNetworkBlocked: A KV API call to api.cloudflare.com was stopped: tests must not leave*",
    ])
    assert "production-token" not in result.stdout.str()
