"""The process-wide clock that replaced a timeout per event per client: who it ticks, and how often."""

import asyncio

import anyio
import pytest

from jobpulse.web.streaming.stream_clock import StreamClock

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, job_id: str = "job") -> None:
        self.job_id = job_id
        self.ticks: list[float] = []
        self.dropped = False

    def tick(self, now: float) -> None:
        self.ticks.append(now)

    def drop(self) -> None:
        self.dropped = True


class Broken(Recorder):
    """A stream whose tick fails (a bug in it, a transport gone wrong)."""

    def tick(self, now: float) -> None:
        super().tick(now)
        raise RuntimeError("boom")


async def ticks_until(clock: StreamClock, recorder: Recorder, count: int) -> None:
    with anyio.fail_after(5):
        while len(recorder.ticks) < count:
            assert clock._task is not None and not clock._task.done(), "the clock stopped"
            await asyncio.sleep(0.01)


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


async def test_a_stream_may_leave_while_being_ticked_and_the_others_keep_ticking() -> None:
    """Regression: iterating the live set while a stream discards itself ended the clock's loop."""
    clock = StreamClock(0.01)
    kept, leaver = Recorder(), Recorder()
    leaver.tick = lambda now: clock.discard(leaver)  # type: ignore[method-assign]
    clock.add(leaver)
    clock.add(kept)
    clock.start()
    try:
        await ticks_until(clock, kept, 5)
    finally:
        await clock.stop()
    assert len(clock) == 1 and not leaver.dropped


async def test_a_stream_that_raises_is_dropped_and_logged_and_the_others_keep_their_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = StreamClock(0.01)
    kept, broken = Recorder("kept-job"), Broken("broken-job")
    clock.add(broken)
    clock.add(kept)
    clock.start()
    try:
        await ticks_until(clock, kept, 5)
    finally:
        await clock.stop()
    assert broken.dropped and len(broken.ticks) == 1  # dropped at its first failure, never ticked again
    assert len(clock) == 1
    failures = [r for r in caplog.records if r.name == "jobpulse.web.streaming.stream_clock"]
    assert len(failures) == 1 and getattr(failures[0], "job_id", None) == "broken-job"
    assert failures[0].exc_info is not None and "boom" in str(failures[0].exc_info[1])


async def test_a_drop_that_fails_too_still_leaves_the_clock_running() -> None:
    class Worse(Broken):
        def drop(self) -> None:
            raise OSError("the transport is gone")

    clock = StreamClock(0.01)
    kept = Recorder()
    clock.add(Worse())
    clock.add(kept)
    clock.start()
    try:
        await ticks_until(clock, kept, 5)
    finally:
        await clock.stop()
