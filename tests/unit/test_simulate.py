"""The `simulate` task's pacing: a timetable, so a slow publish does not slow the job down."""

import asyncio
import time
from typing import Any

import pytest

from jobpulse.worker.progress import REPORTER_KEY
from worker.tasks.simulate import SimulateParams, simulate

pytestmark = pytest.mark.anyio

PUBLISH_S = 0.06


class SlowReporter:
    """Stands in for the progress reporter: each report takes `PUBLISH_S`, like a slow Redis round trip."""

    def __init__(self) -> None:
        self.steps: list[int | None] = []

    async def report(self, update: Any) -> None:
        await asyncio.sleep(PUBLISH_S)
        self.steps.append(update.current)


async def test_steps_keep_to_a_timetable_however_long_a_publish_takes() -> None:
    """Regression: each step slept a full interval after its publish, so publishes stretched the job.

    4 steps 100 ms apart with 60 ms publishes: on the timetable 3 x 100 + 60 = 360 ms; sleeping a full
    interval after each publish, 3 x 160 + 60 = 540 ms.
    """
    reporter = SlowReporter()
    started = time.monotonic()
    result = await simulate({REPORTER_KEY: reporter}, SimulateParams(steps=4, interval_ms=100))
    elapsed = time.monotonic() - started
    assert result == {"steps": 4}
    assert reporter.steps == [1, 2, 3, 4]
    assert 0.36 <= elapsed < 0.46, elapsed
