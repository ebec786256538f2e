"""The bot's one source of the time of day, so that tests can move time instead of sleeping.

Every module that reads the time (prompts, schedules, sends, the bridge, the audit, the
update journal) is handed the one ``Clock`` that ``runtime.open_runtime`` creates; none
calls ``time.time()`` itself. The time is wall time (seconds since the epoch) because it
is stored and compared across restarts and replicas. Timers (the JobQueue, ``asyncio``
timeouts) keep the event loop's own time; durations in logs use ``time.perf_counter``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall time, in seconds since the epoch."""
        ...


class SystemClock:
    """The real time of day."""

    def now(self) -> float:
        return time.time()
