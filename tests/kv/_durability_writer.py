"""A writer for the durability tests: writes until killed, printing each key
only after the write was acknowledged.

``python -m tests.kv._durability_writer local PATH`` writes to a LocalKV;
``... emulator BASE_URL NAMESPACE TOKEN`` writes through KVClient. Every tenth
round is a bulk write of five keys, printed after the bulk call returns.
"""

import sys


def value_for(key):
    return f"value-of-{key}-" + "v" * (len(key) * 7 % 200)


def main(argv):
    if argv[0] == "local":
        from django_cfkv.local import LocalKV

        kv = LocalKV(argv[1])
    else:
        from django_cfkv.client import KVClient

        kv = KVClient("0" * 32, argv[2], argv[3], base_url=argv[1], max_retries=0, timeout=2)
    i = 0
    while True:
        i += 1
        try:
            if i % 10 == 0:
                keys = [f"bulk:{i}:{j}" for j in range(5)]
                kv.put_many([{"key": k, "value": value_for(k), "metadata": {"kind": "cache"}} for k in keys])
            else:
                keys = [f"key:{i}"]
                kv.put(keys[0], value_for(keys[0]), metadata={"kind": "cache", "i": i})
        except Exception as exc:  # the store went away: say so, never claim the write
            print(f"ERROR {type(exc).__name__}", flush=True)
            continue
        for key in keys:
            print(f"ACK {key}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
