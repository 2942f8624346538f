"""What signing pickled cache entries costs: CPU per set/get on LocalKV, signed against unsigned.

The baseline is the same cache in the same process with the HMAC taken out
(``sign`` returns the text as is and ``verified_body`` accepts it), which is
what the release before signing did. A near-cache hit makes no KV call, so
it shows the HMAC's share of the decode alone; a 10 KB value shows how it
grows with the entry.
"""

import itertools
import statistics
from unittest import mock

from django.conf import settings
from django.test import override_settings

from django_cfkv import conf, nearcache
from django_cfkv.cache import CloudflareKVCache, codec

from .common import measure, row, smoke_env

VALUES = {
    "small": {"user": 42, "items": list(range(20))},
    "10 KB": [{"id": i, "name": f"row {i}", "tags": ["a", "b"], "score": i / 7} for i in range(160)],
}


def _unsigned():
    """Patch the HMAC out of the codec, as entries were before signing."""
    def accept(raw, kv_key):
        return (raw if isinstance(raw, bytes) else raw.encode()), True

    return mock.patch.multiple(codec, sign=lambda text, kv_key: text, verified_body=accept)


def _cases(value, prefix):
    """Return {case: fn(i)} on caches under ``prefix``, their entries written in the current format."""
    cache = CloudflareKVCache("default", {"KEY_PREFIX": prefix})
    near = CloudflareKVCache("default", {"KEY_PREFIX": f"{prefix}-near", "OPTIONS": {"NEAR_CACHE_TIMEOUT": 3600}})
    keys = [f"k{i}" for i in range(50)]
    cache.set_many(dict.fromkeys(keys, value), None)
    near.set("hot", value, None)
    near.get("hot")  # fills the near cache: every later get decodes from memory
    cycle = itertools.cycle(keys)
    return {
        "set": lambda i: cache.set(next(cycle), value, None),
        "get": lambda i: cache.get(next(cycle)),
        "get (near-cache hit)": lambda i: near.get("hot"),
    }


def run(smoke=False):
    n, rounds = (20, 1) if smoke or smoke_env() else (400, 7)
    rows = []
    path = str(settings.DATA_DIR / "signing.sqlite3")
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": path}}):
        conf.reset()
        nearcache.reset()
        for number, (size, value) in enumerate(VALUES.items()):
            signed = _cases(value, f"signed{number}")
            with _unsigned():
                unsigned = _cases(value, f"unsigned{number}")
            samples = {name: ([], []) for name in signed}
            for _ in range(rounds):  # alternate, so drift hits both alike
                for name in signed:
                    samples[name][0].append(measure(signed[name], n)[1])
                    with _unsigned():
                        samples[name][1].append(measure(unsigned[name], n)[1])
            for name, (on, off) in samples.items():
                rows.append(row("cache_signing", f"{name}, {size} value", statistics.median(on) * 1e6, "µs CPU",
                                baseline="unsigned entries", baseline_value=statistics.median(off) * 1e6))
        conf.reset()
        nearcache.reset()
    return rows
