"""The process-wide clock that replaced a timeout per event per client: who it ticks, and how often."""

import asyncio

import anyio
import pytest

from jobpulse.web.streaming.stream_clock import StreamClock

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[float] = []

    def tick(self, now: float) -> None:
        self.ticks.append(now)


def test_the_tick_is_a_quarter_of_the_shortest_deadline_and_at_most_a_second() -> None:
    assert StreamClock.for_deadlines(15, 60).tick_s == 1.0
    assert StreamClock.for_deadlines(0.2, 60).tick_s == 0.05
    assert StreamClock.for_deadlines(15, 0.4).tick_s == 0.1


async def test_it_ticks_the_streams_it_holds_and_no_others() -> None:
    clock = StreamClock(0.01)
    kept, dropped = Recorder(), Recorder()
    clock.add(kept)
    clock.add(dropped)
    clock.discard(dropped)
    clock.start()
    try:
        with anyio.fail_after(5):
            while len(kept.ticks) < 3:
                await asyncio.sleep(0.01)
    finally:
        await clock.stop()
    assert dropped.ticks == []
    assert kept.ticks == sorted(kept.ticks) and kept.ticks[1] - kept.ticks[0] >= 0.009
    assert len(clock) == 1


async def test_a_stream_may_leave_while_being_ticked() -> None:
    clock = StreamClock(0.01)
    leaver = Recorder()
    leaver.tick = lambda now: clock.discard(leaver)  # type: ignore[method-assign]
    clock.add(leaver)
    clock.start()
    try:
        with anyio.fail_after(5):
            while len(clock):
                await asyncio.sleep(0.01)
    finally:
        await clock.stop()
