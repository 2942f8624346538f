"""Durability: LocalKV and the emulator are killed with SIGKILL under write
load; every write acknowledged before the kill is there after a restart."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from django_cfkv.client import KVClient
from django_cfkv.local import LocalKV

from ._durability_writer import value_for
from .test_load import start_emulator

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "durability-token"


class Writer:
    """A writer subprocess whose acknowledged keys are collected as it prints them."""

    def __init__(self, *args):
        self.process = subprocess.Popen([sys.executable, "-m", "tests.kv._durability_writer", *args],
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.acked, self.errors = [], 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith("ACK "):
                self.acked.append(line[4:].strip())
            elif line.startswith("ERROR"):
                self.errors += 1

    def wait_for(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.02)
        assert len(self.acked) >= count, f"writer acknowledged only {len(self.acked)} writes"

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join(5)
        self.process.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_local_kv_keeps_every_acknowledged_write_after_sigkill(tmp_path, round_):
    path = tmp_path / "kv.sqlite3"
    writer = Writer("local", str(path))
    writer.wait_for(300 + round_ * 200)
    writer.kill()  # mid-write: the next write may be half done
    kv = LocalKV(path)
    missing = [k for k in writer.acked if kv.get(k) != value_for(k).encode()]
    assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    # The store is usable after the crash: it takes writes and lists every key.
    kv.put("after-crash", b"ok")
    assert len({k.name for k in kv.iter_keys()}) >= len(writer.acked) + 1


@pytest.mark.slow
def test_emulator_keeps_every_acknowledged_write_after_sigkill(tmp_path):
    path = tmp_path / "emulator.sqlite3"
    namespace = uuid.uuid4().hex
    emulator, base_url = start_emulator(path, TOKEN)
    writers = [Writer("emulator", base_url, namespace, TOKEN) for _ in range(2)]
    try:
        for writer in writers:
            writer.wait_for(150)
        emulator.send_signal(signal.SIGKILL)  # the server dies under write load
        emulator.wait()
        time.sleep(0.3)  # let the writers see it fail
    finally:
        emulator.stdout.close()
        for writer in writers:
            writer.kill()
    acked = [k for w in writers for k in w.acked]
    assert sum(w.errors for w in writers) > 0  # the writers did see the kill
    restarted, base_url = start_emulator(path, TOKEN)
    try:
        client = KVClient("0" * 32, namespace, TOKEN, base_url=base_url)
        missing = [k for k in acked if client.get(k) != value_for(k).encode()]
        assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        found = client.get_many(acked[-100:])
        assert len(found) == len(set(acked[-100:]))
        client.close()
    finally:
        restarted.kill()
        restarted.wait()
        restarted.stdout.close()
