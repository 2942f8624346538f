"""Fault injection: shares of 429 and 503 answers, slow answers, added latency, partial bulk failures."""

import random
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TypeVar

from .wire import Reply

_Item = TypeVar("_Item")


class Faults:
    """The faults the emulator injects, changed at run time (``update()``, ``reset()``) from any thread.

    ``latency_ms`` models the network rather than a fault: ``reset()`` turns
    every fault off and puts it back to its start-up value.
    """

    FIELDS: dict[str, float] = {"rate_429": 0.0, "retry_after": 1, "rate_503": 0.0, "slow_rate": 0.0,
                                "slow_ms": 0, "latency_ms": 0, "bulk_unsuccessful": 0.0}

    def __init__(self, **values: float) -> None:
        self._lock = threading.Lock()
        self.values = dict(self.FIELDS)
        self.update(values)
        self._start_latency = self.values["latency_ms"]

    def update(self, values: Mapping[str, float]) -> None:
        unknown = set(values) - set(self.FIELDS)
        if unknown:
            raise ValueError(f"Unknown fault settings: {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in values.items():
                self.values[name] = type(self.FIELDS[name])(value)

    def reset(self) -> None:
        """Turn every fault off; the latency goes back to its start-up value."""
        with self._lock:
            self.values = {**self.FIELDS, "latency_ms": self._start_latency}

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def inject(self) -> None:
        """Wait the added latency, and answer this call with a fault when its share says so."""
        # Real time, not the package's clock: this is the network a client waits for.
        if self["latency_ms"]:
            time.sleep(self["latency_ms"] / 1000)
        if self["slow_rate"] and random.random() < self["slow_rate"]:
            time.sleep(self["slow_ms"] / 1000)
        if self["rate_429"] and random.random() < self["rate_429"]:
            extra = {"Retry-After": str(int(self["retry_after"]))} if self["retry_after"] >= 0 else {}
            raise Reply(429, 10022, "too many requests", extra)
        if self["rate_503"] and random.random() < self["rate_503"]:
            raise Reply(503, 10001, "service temporarily unavailable")

    def unsuccessful(self, items: Iterable[_Item]) -> set[_Item]:
        """Return the items a bulk call reports as not done (a ``bulk_unsuccessful`` share of them)."""
        share = self["bulk_unsuccessful"]
        return {item for item in items if random.random() < share} if share else set()
