"""One timer for every open stream: keep-alives and send deadlines, checked a few times a second.

An `asyncio.timeout()` around each send and each wait costs a timer handle created, rescheduled and
cancelled per event per client: under fan-out that was a quarter of the web process's CPU, for deadlines
that almost never fire. Instead each stream notes, with one clock read per send, when its current send
began and when its last one did; this clock walks the open streams every `tick_s` and acts on the few that
are due. A deadline therefore fires up to one tick late, which no client can tell from network jitter.

One stream's failure is that stream's alone: a `tick` that raises drops that stream (its client
reconnects and resumes) and is logged with its job, and the clock goes on for every other stream.
"""

import asyncio
import contextlib
import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class Ticking(Protocol):
    @property
    def job_id(self) -> str: ...

    def tick(self, now: float) -> None:
        """Act on whatever is due at loop time `now`; must not block, and should not raise."""

    def drop(self) -> None:
        """End the stream now, without a goodbye: its client reconnects with its `Last-Event-ID`."""


class StreamClock:
    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._streams: set[Ticking] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_deadlines(cls, *deadlines_s: float) -> "StreamClock":
        """A clock fine enough for the shortest deadline (a quarter of it), and at most 1 s per tick."""
        return cls(min(1.0, *(deadline / 4 for deadline in deadlines_s)))

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: Ticking) -> None:
        self._streams.add(stream)

    def discard(self, stream: Ticking) -> None:
        self._streams.discard(stream)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="jobpulse-stream-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for stream in list(self._streams):  # a copy: a stream may leave while it is ticked
                try:
                    stream.tick(now)
                except Exception:
                    self._drop(stream)

    def _drop(self, stream: Ticking) -> None:
        self._streams.discard(stream)
        job_id = getattr(stream, "job_id", None)
        logger.exception(
            "job %s: its stream failed in the stream clock; dropped", job_id, extra={"job_id": job_id}
        )
        with contextlib.suppress(Exception):
            stream.drop()
