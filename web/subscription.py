"""One SSE client's view of one job: the events it still has to send, in order, exactly once.

The job's Redis Stream is the truth; live announcements from the hub are a shortcut. A subscription keeps
a bounded queue of contiguous events after the last one handed out. When it cannot simply append a live
event — it is still catching up, the event does not follow on (the hub missed some), or its queue is full
because the client reads slowly — it marks itself *behind* and reads the missing events from the stream.
Memory per client is therefore bounded, a slow client never holds anyone else up, and nothing is lost.
"""

import asyncio
from typing import Protocol

from jobpulse.events import StoredEvent
from jobpulse.store import JobState, lost_event_sse

# Events read from Redis per round trip while catching up, at most: also bounded by the buffer size.
_FETCH_BATCH = 500


class EventSource(Protocol):
    async def read_events(self, job_id: str, after: int, count: int) -> list[StoredEvent]: ...

    async def get(self, job_id: str) -> JobState | None: ...


class Subscription:
    def __init__(self, job_id: str, after: int, source: EventSource, max_buffered: int) -> None:
        self.job_id = job_id
        self._source = source
        self._max_buffered = max_buffered
        self._fetch_batch = min(_FETCH_BATCH, max_buffered)
        self._queue: list[StoredEvent] = []  # short, and an empty deque would be 624 bytes per client
        self._tail = after  # id of the newest event handed out or queued
        self._early: dict[int, StoredEvent] = {}  # live events that arrived ahead of a gap being filled
        self._behind = True  # the stream may hold events after `_tail` that are not queued
        self._fetching = False
        self._keepalive_due = False
        self._loop = asyncio.get_running_loop()  # looked up once: each lookup costs a getpid() call
        # A bare future rather than an asyncio.Event: one allocation per wait, no waiter list.
        self._waiter: asyncio.Future[None] | None = None
        self.finished = False  # the terminal event was handed out
        self.closed = False  # the hub is going away

    def offer(self, event: StoredEvent) -> None:
        """Called by the hub for each live event of this job; never blocks."""
        event_id = event.id
        if event_id <= self._tail or self.finished:
            return  # already have it
        if event_id == self._tail + 1 and not self._behind and not self._fetching:
            if len(self._queue) < self._max_buffered:
                self._queue.append(event)
                self._tail = event_id
            else:
                self._behind = True  # slow reader: it will re-read from the stream once it catches up
        elif len(self._early) < self._max_buffered:
            self._early[event_id] = event  # spliced in after the gap before it is read from the stream
            if not self._fetching:
                self._behind = True
        else:
            self._early.clear()
            self._behind = True
        self._wake()

    def mark_behind(self) -> None:
        """Live announcements may have been missed (the hub reconnected): re-read from the stream."""
        self._behind = True
        self._wake()

    def request_keepalive(self) -> None:
        """The stream has been quiet: make `next_chunk` return b"" unless it has events to send."""
        self._keepalive_due = True
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if (waiter := self._waiter) is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunk(self, idle_timeout: float | None = None) -> bytes | None:
        """Encoded events to send next; None at the end.

        b"" when a keep-alive was requested with nothing to send, or after `idle_timeout` seconds of
        nothing. SSE streams pass no timeout: a per-wait timer for every event of every client was a
        quarter of the web's CPU under fan-out, so one process-wide clock requests their keep-alives.
        """
        while not self.finished and not self.closed:
            if self._queue:
                return self._take_queued()
            if self._behind:
                chunk = await self._catch_up()
                if chunk:
                    return chunk
                continue
            if self._keepalive_due:
                self._keepalive_due = False
                return b""
            self._waiter = self._loop.create_future()
            try:
                if idle_timeout is None:
                    await self._waiter
                else:
                    async with asyncio.timeout(idle_timeout):
                        await self._waiter
            except TimeoutError:
                return b""
            finally:
                self._waiter = None
        return None

    def _take_queued(self) -> bytes:
        self._keepalive_due = False  # events count as a sign of life
        parts: list[bytes] = []
        for event in self._queue:
            parts.append(event.sse)
            if event.final:
                self.finished = True
                break
        self._queue.clear()
        return parts[0] if len(parts) == 1 else b"".join(parts)  # one event: the hub's shared bytes

    async def _catch_up(self) -> bytes:
        """Read the events after `_tail` from the stream, then splice in live ones that came meanwhile."""
        self._behind = False
        self._fetching = True
        try:
            events = await self._source.read_events(self.job_id, self._tail, self._fetch_batch)
        finally:
            self._fetching = False
        prefix = b""
        # A fresh subscriber (tail 0) simply starts at the oldest retained event; one that had events
        # and asked for what follows them is told that some are gone.
        if events and events[0].id > self._tail + 1 and self._tail > 0:
            prefix = await self._lost_signal(first_retained=events[0].id)
        for event in events:
            if event.id > self._tail:
                self._queue.append(event)
                self._tail = event.id
        if len(events) == self._fetch_batch:
            self._behind = True  # more to read
        self._splice_early()
        return prefix + (self._take_queued() if self._queue else b"")

    def _splice_early(self) -> None:
        while (event := self._early.pop(self._tail + 1, None)) is not None:
            self._queue.append(event)
            self._tail = event.id
        if any(event_id > self._tail for event_id in self._early):
            self._behind = True  # still a gap before them: read it from the stream
        self._early = {k: v for k, v in self._early.items() if k > self._tail}

    async def _lost_signal(self, first_retained: int) -> bytes:
        state = await self._source.get(self.job_id)
        if state is None:
            return b""
        return lost_event_sse(state, last_event_id=self._tail, first_retained_id=first_retained)
