from .contract import KVContract


class TestKVContract(KVContract):
    """The contract on LocalKV and on KVClient + emulator (the ``kv`` fixture's params)."""
