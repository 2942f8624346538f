"""The lines of tests/third_party_skips.txt for django-ratelimit's suite cannot rot: each names a test the suite
has, an exception class and a reason, and a line naming a test it does not have stops the run. (A listed test
that passes fails the run too: tests/ratelimit/django_ratelimit/conftest.py marks each as a strict xfail.)"""

from unittest import mock

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.ratelimit.django_ratelimit import suite


def test_every_line_names_a_test_of_the_suite_an_exception_and_a_reason():
    listed = suite.listed()
    assert len(listed) == 5 and all(entry.reason and issubclass(entry.error, Exception) for entry in listed)
    assert {entry.error for entry in listed} == {AssertionError, ImproperlyConfigured}


@pytest.mark.parametrize("test", ["tests.py::RatelimitTests::test_gone", "tests.py::NoSuchTests::test_ip",
                                  "test_backend.py::RatelimitTests::test_ip"])
def test_a_line_naming_what_is_not_there_stops_the_run(test):
    entry = suite.ExpectedFailure(test, "AssertionError", "why")
    with mock.patch.object(suite, "expected_failures", lambda name: [entry]):
        with pytest.raises(LookupError, match="which django-ratelimit's suite does not have"):
            suite.listed()
