"""The bot's one source of the time, so that tests can move time instead of sleeping.

Every module that reads the time (prompts, schedules, sends, the bridge, the audit, the
update journal, the poller lease) is handed the one ``Clock`` that
``runtime.open_runtime`` creates; none calls ``time`` itself. ``now()`` is wall time
(seconds since the epoch) because it is stored and compared across restarts and
replicas; ``monotonic()`` is for what must not jump when the wall clock is set — the
poller lease's fence (``replicas.Election``) counts its lease by it. Timers (the
JobQueue, ``asyncio`` timeouts) keep the event loop's own time; durations in logs use
``time.perf_counter``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall time, in seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards (nor jump forwards
        when the wall clock is set)."""
        ...


class SystemClock:
    """The real time of day."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
