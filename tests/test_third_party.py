"""Fetching the peer suites: parallel tox environments share one folder of them."""

import threading

from tests import third_party

WHOLE = "line\n" * 1000


def test_a_suite_fetched_by_two_processes_at_once_is_never_seen_half_written(tmp_path, monkeypatch):
    monkeypatch.setattr(third_party, "SUITES", tmp_path)
    late_began, late_starts, late_half_written = threading.Event(), threading.Event(), threading.Event()
    late_may_finish = threading.Event()

    def fetch_whole(into):
        assert late_began.wait(10)
        (into / "tests.py").write_text(WHOLE)

    def fetch_late(into):  # began before the other fetch put the suite in place
        late_began.set()
        late_starts.wait(10)
        with open(into / "tests.py", "w") as out:
            out.write(WHOLE[:100])
            out.flush()
            late_half_written.set()
            late_may_finish.wait(10)
            out.write(WHOLE[100:])

    late_result = []
    late = threading.Thread(target=lambda: late_result.append(third_party.fetch_missing({"suite": fetch_late})))
    late.start()
    try:
        assert third_party.fetch_missing({"suite": fetch_whole}) == ["suite"]
        late_starts.set()
        assert late_half_written.wait(10)
        # The first fetcher's tests now read the suite while the late one is still writing.
        assert (tmp_path / "suite" / "tests.py").read_text() == WHOLE
    finally:
        late_began.set()
        late_starts.set()
        late_may_finish.set()
        late.join(10)
    assert late_result == [[]]
    assert (tmp_path / "suite" / "tests.py").read_text() == WHOLE
    assert [p.name for p in tmp_path.iterdir()] == ["suite"]  # no half-fetched folder is left behind


def test_a_suite_in_place_is_not_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setattr(third_party, "SUITES", tmp_path)
    calls = []
    assert third_party.fetch_missing({"suite": calls.append}) == ["suite"]
    assert third_party.fetch_missing({"suite": calls.append}) == []
    assert len(calls) == 1
    assert (tmp_path / "suite" / ".complete").exists()
