"""Fault injection shared by the simulators: clock skew, latency, failed and cut-off answers.

Simulators inherit :class:`FaultKnobs` through :class:`~keymon.simulator.common.SimulatorBase`,
which sets, in its ``__init__``, the attributes the class body declares, and whose request
handling consumes ``_fail_remaining`` and ``_truncate_remaining`` and reports ``_latency`` as
the response's delay. (The Binance simulator has knobs of its own.)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable


class FaultKnobs:
    """The test and demo knobs every simulator offers, thread-safe under ``_lock``."""

    _lock: threading.Lock
    _clock: Callable[[], float]
    _clock_skew_ms: int
    _latency: float
    _fail_remaining: int
    _fail_status: int
    _fail_path: str | None
    _truncate_remaining: int

    def _now_ms(self) -> int:
        return round(self._clock() * 1000) + self._clock_skew_ms

    def server_time_ms(self) -> int:
        """The simulator's server time in ms (clock plus skew)."""
        with self._lock:
            return self._now_ms()

    @property
    def clock_skew_ms(self) -> int:
        """Milliseconds added to the clock to get server time."""
        with self._lock:
            return self._clock_skew_ms

    @clock_skew_ms.setter
    def clock_skew_ms(self, skew: int) -> None:
        with self._lock:
            self._clock_skew_ms = int(skew)

    @property
    def latency(self) -> float:
        """Seconds every exchange response is delayed by."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("latency must be a finite number >= 0")
        with self._lock:
            self._latency = float(seconds)

    def fail_next(self, n: int, status: int = 503, path: str | None = None) -> None:
        """Answer the next ``n`` exchange requests with ``status`` and a non-JSON body; with
        ``path``, only the requests for that endpoint (the others are answered as usual)."""
        if n < 0 or not 100 <= status <= 599:
            raise ValueError("fail_next needs n >= 0 and an HTTP status 100-599")
        with self._lock:
            self._fail_remaining, self._fail_status, self._fail_path = n, status, path

    def truncate_next(self, n: int) -> None:
        """Cut the body of the next ``n`` exchange responses in half."""
        if n < 0:
            raise ValueError("truncate_next needs n >= 0")
        with self._lock:
            self._truncate_remaining = n
