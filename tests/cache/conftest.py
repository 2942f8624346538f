from tests.support.faults import closed_port, emulator, fault, listener, slept  # noqa: F401 (fixtures)
