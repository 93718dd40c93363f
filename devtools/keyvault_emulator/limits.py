"""Key Vault's throttling (sliding windows of admitted requests) and the request counters."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

# The service limits per vault and region: 300 "create" (set_secret) and 4,000 other transactions per 10 s.
DEFAULT_CREATE_LIMIT = 300
DEFAULT_TX_LIMIT = 4000
DEFAULT_WINDOW_SECONDS = 10.0


class SlidingWindow:
    """At most ``limit`` admitted requests in any ``window`` seconds. Rejected requests use no quota."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: deque[float] = deque()
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every admitted request: a vault that has been idle for a whole window."""
        with self._lock:
            self._admitted.clear()

    def acquire(self) -> int | None:
        """None when admitted; otherwise the whole seconds until a slot frees (at least 1).

        At least 1 because azure-core treats ``Retry-After: 0`` as absent and falls back to its own backoff.
        """
        with self._lock:
            now = self._clock()
            while self._admitted and self._admitted[0] <= now - self.window:
                self._admitted.popleft()
            if len(self._admitted) < self.limit:
                self._admitted.append(now)
                return None
            return max(1, math.ceil(self._admitted[0] + self.window - now))


class Stats:
    """Counts per operation; 401 challenges count as ``challenge``, unroutable requests as ``unknown``.

    Operations on one secret are also counted per (lower-case) secret name, so a test can tell whose value
    was read: ``names`` in the snapshot is ``{operation: {name: count}}``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._names: dict[str, Counter[str]] = {}
        self._throttled = 0

    def count(self, operation: str, name: str | None = None) -> None:
        with self._lock:
            self._requests[operation] += 1
            if name:
                self._names.setdefault(operation, Counter())[name.lower()] += 1

    def count_throttled(self) -> None:
        with self._lock:
            self._throttled += 1

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._names.clear()
            self._throttled = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(sorted(self._requests.items())),
                "throttled": self._throttled,
                "total": sum(self._requests.values()),
                "names": {op: dict(sorted(names.items())) for op, names in sorted(self._names.items())},
            }
