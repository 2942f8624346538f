"""Load: 2 processes x 8 threads on sessions and the cache, against the emulator
running as its own process, for a few seconds. No crash, no corrupted value, no
acknowledged write lost, no leaked connection or file descriptor."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from django_cfkv.client import KVClient

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "load-test-token"
SECONDS = 3


def start_emulator(path, token=TOKEN):
    """Start ``python -m django_cfkv.emulator`` on a free port; return (process, base_url)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "django_cfkv.emulator", "--port", "0", "--path", str(path), "--token", token],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = process.stdout.readline()
    assert "cfkv emulator on " in line, line
    return process, line.split(" on ", 1)[1].split(" ", 1)[0]


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_two_processes_of_eight_threads_lose_and_corrupt_nothing(tmp_path):
    emulator, base_url = start_emulator(tmp_path / "kv.sqlite3")
    namespace = uuid.uuid4().hex
    try:
        emulator_fds = _fds(emulator.pid)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
        workers = [subprocess.Popen([sys.executable, "-m", "tests.kv._load_worker", base_url, namespace,
                                     TOKEN, str(SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=ROOT, env=env) for _ in range(2)]
        outputs = [w.communicate(timeout=120) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
        results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
        for result in results:
            assert result["errors"] == [] and result["corrupt"] == []
            assert result["ops"] > 100 and result["acked_cache"] > 0 and result["acked_sessions"] > 0
            # Connections are pooled and reused: about one per thread, not one per call.
            assert result["connections_opened"] <= 16, result["connections_opened"]
            assert result["fds_during"] <= 16 and result["fds_after_close"] <= 1, result
        # The emulator holds no socket per past request either.
        assert emulator.poll() is None
        client = KVClient("0" * 32, namespace, TOKEN, base_url=base_url)
        names = [k.name for k in client.iter_keys()]
        assert sum(1 for n in names if n.startswith("session:")) >= sum(r["acked_sessions"] for r in results)
        client.close()
        assert _fds(emulator.pid) <= emulator_fds + 4
    finally:
        emulator.kill()
        emulator.wait()
        emulator.stdout.close()
