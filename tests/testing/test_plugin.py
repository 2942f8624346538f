"""The pytest plugin and unittest helpers, exercised as a user's project would use them.

The example project (tests/testing/examples/) runs once, in a pytest
subprocess, with its own settings: every CFKV alias there points at
api.cloudflare.com, so anything the helpers miss fails on the loopback guard.
"""

import re
from pathlib import Path

from django_cfkv import get_kv

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).parent / "examples"
EXAMPLE_TESTS = ["fixtures", "unittest_style", "swallowed"]

EXPECTED = {
    "test_fixtures.py::test_aliases_point_at_the_emulator": "PASSED",
    "test_fixtures.py::test_writes_here": "PASSED",
    "test_fixtures.py::test_limiter_calls_are_this_tests": "PASSED",
    "test_fixtures.py::test_next_test_sees_none_of_it": "PASSED",
    "test_fixtures.py::test_settings_restored_after_a_test": "PASSED",
    "test_fixtures.py::test_fault_context": "PASSED",
    "test_fixtures.py::test_faults_left_on": "PASSED",
    "test_fixtures.py::test_faults_left_on_are_off_in_the_next_test": "PASSED",
    "test_fixtures.py::test_call_budget": "PASSED",
    "test_fixtures.py::test_async_calls_are_counted": "PASSED",
    "test_unittest_style.py::ClassDataTests::test_1_sees_class_data_and_writes": "PASSED",
    "test_unittest_style.py::ClassDataTests::test_2_sees_class_data_not_test_1": "PASSED",
    "test_unittest_style.py::ClassDataTests::test_3_async_sees_class_data_not_test_1": "PASSED",
    "test_unittest_style.py::OutsideTests::test_settings_untouched_outside": "PASSED",
    "test_unittest_style.py::OutsideTests::test_context_manager": "PASSED",
    "test_unittest_style.py::OutsideTests::test_function_decorator": "PASSED",
    "test_unittest_style.py::OutsideTests::test_async_context_manager": "PASSED",
    "test_unittest_style.py::OutsideTests::test_async_function_decorator": "PASSED",
    # The uncaught block fails the test once; the caught one is reported at teardown.
    "test_swallowed.py::test_lets_the_block_through": "FAILED",
    "test_swallowed.py::test_swallows_the_block": "PASSED ERROR",
    "test_swallowed.py::test_expects_the_block": "PASSED",
    "test_swallowed.py::test_emulator_calls_pass": "PASSED",
    "test_swallowed.py::test_swallows_an_awaited_block": "PASSED ERROR",
    "test_swallowed.py::test_expects_an_awaited_block": "PASSED",
}


def _outcomes(output):
    """Return {test id: "PASSED" / "FAILED" / "PASSED ERROR"...} from -rA's short summary."""
    found = {}
    for word, nodeid in re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", output, re.MULTILINE):
        found[nodeid] = f"{found[nodeid]} {word}" if nodeid in found else word
    return found


def test_example_project(pytester):
    """One subprocess run (pytest and Django start once): the plugin loads from its entry point."""
    # --ds, not an ini file: pytest-django prefers the outer run's $DJANGO_SETTINGS_MODULE to the ini.
    pytester.makeini("[pytest]\npythonpath = .\naddopts = -p no:cacheprovider --ds=example_settings\n")
    pytester.makepyfile(example_settings=(EXAMPLES / "settings.py").read_text())
    for name in EXAMPLE_TESTS:
        pytester.makepyfile(**{f"test_{name}": (EXAMPLES / f"{name}.py").read_text()})

    output = "\n".join(pytester.runpytest_subprocess("-rA").outlines)

    assert _outcomes(output) == EXPECTED, output
    assert re.search(r"^plugins: .*django-cfkv", output, re.MULTILINE), output
    # The ERRORS section (the short summary repeats it, cut short or not: pytest cuts it except under CI=true).
    errors = output.split(" ERRORS ", 1)[1].split(" FAILURES ", 1)[0]
    assert errors.count("KVNetworkBlocked: 1 KV API call(s) to api.cloudflare.com were stopped during this "
                        "test, and the code under test caught") == 2, output  # the blocking call and the awaited
    assert "KVNetworkBlocked: A KV API call to api.cloudflare.com was stopped: tests must not leave" in output
    assert "production-token" not in output


def test_cfkv_fixture(cfkv, cfkv_emulator, cfkv_calls):
    assert cfkv is get_kv()
    assert cfkv.base_url == cfkv_emulator.base_url
    cfkv.put("k", b"v")
    assert cfkv.get("k") == b"v"
    assert cfkv_calls.counts == {"put": 1, "get": 1}
