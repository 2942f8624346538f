"""The list of django-redis' tests that cannot pass here (tests/third_party_skips.txt) cannot rot: a line that
is malformed, names a test the suite does not have or an exception that is not one, stops the run. (A listed
test that passes fails the run too: tests/cache/django_redis/conftest.py marks each as a strict xfail.)"""

import pytest

from tests.cache.django_redis import suite


def test_every_line_names_a_test_of_the_suite_an_exception_and_a_reason():
    listed = suite.expected_failures()
    assert listed and all(entry.reason and issubclass(entry.error, Exception) for entry in listed)
    suite.check_listed(listed, suite.load())


@pytest.mark.parametrize("line, message", [
    ("django-redis | test_backend.py::TestDjangoRedisCache::test_lock | NotImplementedError",
     "skips.txt:2: expected 'suite \\| test \\| exception \\| reason'"),
    ("django-redis | test_backend.py::TestDjangoRedisCache::test_lock | NoSuchError | why",
     "skips.txt:2: 'NoSuchError' is not a built-in exception"),
    ("django-redis | test_backend.py::TestDjangoRedisCache::test_lock | django.core.exceptions.NoSuch | why",
     "skips.txt:2: 'django.core.exceptions.NoSuch' is not an exception class"),
    ("django-redis | test_backend.py::TestDjangoRedisCache::test_lock | os.path.join | why",
     "skips.txt:2: 'os.path.join' is not an exception class"),
])
def test_a_malformed_line_stops_the_run(tmp_path, line, message):
    path = tmp_path / "skips.txt"
    path.write_text(f"# comment\n{line}\n")
    with pytest.raises(ValueError, match=message):
        suite.expected_failures(path=path)


@pytest.mark.parametrize("test, message", [
    ("test_backend.py::TestDjangoRedisCache::test_gone", "which django-redis' suite does not have"),
    ("test_gone.py::test_x", "which django-redis' suite does not have"),
    ("test_backend.py::TestDjangoRedisCache::test_lock[redis-pickle]", "no configuration 'redis-pickle'"),
])
def test_a_line_naming_what_is_not_there_stops_the_run(test, message):
    entry = suite.ExpectedFailure(test, "AttributeError", "why")
    with pytest.raises(LookupError, match=message):
        suite.check_listed([entry], suite.load())
