"""The pytest plugin (the ``pytest11`` entry point ``cfkv``): fixtures ``cfkv_emulator``, ``cfkv``, ``cfkv_calls``.

Loaded in every pytest run of a project that installs django-cfkv, so importing it touches no settings and
starts nothing: the emulator starts when a test first asks for one of the fixtures.
"""

from collections.abc import Iterator

import pytest

from ..types import KV
from .calls import KVCalls
from .emulator import RunningEmulator, shared_emulator
from .override import override_cfkv


@pytest.fixture(scope="session")
def cfkv_emulator() -> Iterator[RunningEmulator]:
    """The KV REST emulator on a free 127.0.0.1 port for the whole test session."""
    emulator, started = shared_emulator()
    yield emulator
    if started:  # else whoever started it (or interpreter exit) stops it
        emulator.stop()


@pytest.fixture
def cfkv(cfkv_emulator: RunningEmulator, request: pytest.FixtureRequest) -> Iterator[KV | None]:
    """Point every CFKV alias at a fresh emulator namespace for one test; yield the "default" client."""
    override = override_cfkv(emulator=cfkv_emulator)
    __tracebackhide__ = True
    failed_before = request.session.testsfailed
    kv = override.enable(test_code=[request.function.__code__])
    try:
        yield kv
    finally:
        # Stopped calls the test saw, or that failed another fixture, are reported already.
        override.disable(check=request.session.testsfailed == failed_before)


@pytest.fixture
def cfkv_calls() -> KVCalls:
    """Count the KV API calls the test makes: ``cfkv_calls.total``, ``cfkv_calls["get"]``."""
    return KVCalls()
