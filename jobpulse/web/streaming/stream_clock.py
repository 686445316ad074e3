"""One timer for every open stream: keep-alives and send deadlines, checked a few times a second.

An `asyncio.timeout()` around each send and each wait costs a timer handle created, rescheduled and
cancelled per event per client: under fan-out that was a quarter of the web process's CPU, for deadlines
that almost never fire. Instead each stream notes, with one clock read per send, when its current send
began and when its last one did; this clock walks the open streams every `tick_s` and acts on the few that
are due. A deadline therefore fires up to one tick late, which no client can tell from network jitter.
"""

import asyncio
from typing import Protocol


class Ticking(Protocol):
    def tick(self, now: float) -> None:
        """Act on whatever is due at loop time `now`; must not block or raise."""


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
            for stream in list(self._streams):
                stream.tick(now)
