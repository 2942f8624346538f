"""The reliability suite's fixtures live in tests/support/faults.py (the features' fault tests share them)."""

from tests.support.faults import (  # noqa: F401 (fixtures and constants the suite's modules use)
    ACCOUNT,
    BASE,
    MAX_RETRIES,
    NS,
    TOKEN,
    api,
    closed_port,
    emulator,
    envelope,
    failure,
    fake_client,
    listener,
    seen_paths,
    slept,
)
