from tests.support.faults import closed_port, emulator, fault, listener, seen_paths, slept  # noqa: F401 (fixtures)
