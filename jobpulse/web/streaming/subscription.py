"""One SSE client's view of one job: the events it still has to send, in order, exactly once.

The job's Redis Stream is the truth; live announcements from the hub are a shortcut. A subscription keeps
a bounded queue of contiguous events after the last one handed out. When it cannot simply append a live
event — it is still catching up, the event does not follow on (the hub missed some), or its queue is full
because the client reads slowly — it marks itself *behind* and reads the missing events from the stream.
Memory per client is therefore bounded, a slow client never holds anyone else up, and nothing is lost.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from jobpulse.events import StoredEvent
from jobpulse.models import LostEvent
from jobpulse.sse import encode_event
from jobpulse.status import EventType
from jobpulse.store import JobState
from jobpulse.web.paths import NO_PREFIX, JobPaths

# Events read from Redis per round trip while catching up, at most: also bounded by the buffer size.
_FETCH_BATCH = 500


def lost_event_sse(state: JobState, paths: JobPaths, last_event_id: int, first_retained_id: int) -> bytes:
    """The signal that a resuming client missed events no longer retained.

    It carries no `id:`, so a client that drops right after it still resumes from its own last id.
    """
    data = LostEvent(
        job_id=state.id,
        ts=time.time(),
        last_event_id=last_event_id,
        first_retained_id=first_retained_id,
        job=state.view(paths.events(state.id)),
    ).model_dump_json()
    return encode_event(data, event=EventType.LOST.value)


class JobEvents(Protocol):
    """What a subscription reads from: the store's history and state."""

    async def read_events(self, job_id: str, after: int, count: int) -> list[StoredEvent]: ...

    async def get(self, job_id: str) -> JobState | None: ...


class Subscription:
    """Pulled by `next_chunk` (a task per stream), or pushed: after `attach`, a callback hears of news.

    Push mode serves streams held outside a request task (`web/detached_stream.py`): the callback
    takes what is queued with `take_events` at once, and runs `fill` in a task of its own only when the
    subscription has to read Redis.
    """

    __slots__ = (
        "_behind",
        "_early",
        "_fetch_batch",
        "_fetching",
        "_keepalive_due",
        "_loop",
        "_max_buffered",
        "_on_news",
        "_paths",
        "_queue",
        "_source",
        "_tail",
        "_waiter",
        "_write_live",
        "closed",
        "finished",
        "handed_out",
        "job_id",
    )

    def __init__(
        self, job_id: str, after: int, source: JobEvents, max_buffered: int, paths: JobPaths = NO_PREFIX
    ) -> None:
        self.job_id = job_id
        self._paths = paths
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
        self._on_news: Callable[[], None] | None = None
        self._write_live: Callable[[StoredEvent], bool] | None = None
        self.handed_out = 0  # events handed out so far, for the delivery count
        self.finished = False  # the terminal event was handed out
        self.closed = False  # the hub is going away

    def deliver(self, events: list[StoredEvent]) -> None:
        """The job's live events from one read of the hub, in order; never blocks.

        The usual case, one event that follows on from what this subscription has, nothing queued and
        a stream ready to write, skips the queue: the event goes to the stream's socket at once. A
        hot job's update to a thousand watchers is then a thousand writes and little else. Anything
        else (several events, a gap, a catch-up under way, the end of the job) takes `offer`.
        """
        if len(events) == 1:
            event = events[0]
            write_live = self._write_live
            if (
                write_live is not None
                and event.id == self._tail + 1
                and not event.final
                and not self._queue
                and not self._behind
                and not self._fetching
                and not self.finished
                and not self.closed
                and write_live(event)
            ):
                self._tail = event.id
                self.handed_out += 1
                self._keepalive_due = False
                return
        for event in events:
            self.offer(event)

    def offer(self, event: StoredEvent) -> None:
        """Called for each live event of this job; never blocks."""
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

    def attach(
        self, on_news: Callable[[], None], write_live: Callable[[StoredEvent], bool] | None = None
    ) -> None:
        """Push mode: call `on_news` (which must not block) whenever there is something to act on.

        `write_live`, if given, writes one live event at once and says whether it could (`deliver`).
        """
        self._on_news = on_news
        self._write_live = write_live

    @property
    def needs_fetch(self) -> bool:
        """Events may be missing between what was handed out and what is queued: `fill` reads them."""
        return self._behind and not self.finished and not self.closed

    def _wake(self) -> None:
        if self._on_news is not None:
            self._on_news()
        elif (waiter := self._waiter) is not None and not waiter.done():
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
                prefix = await self.fill()
                chunk = prefix + self._take_queued() if self._queue else prefix
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

    def take_events(self) -> list[StoredEvent]:
        """The queued events, in order, up to the terminal one; empty if none are queued."""
        events = self._queue
        if not events:
            return events
        self._queue = []
        self._keepalive_due = False  # events count as a sign of life
        for index, event in enumerate(events):
            if event.final:
                self.finished = True
                del events[index + 1 :]
                break
        self.handed_out += len(events)
        return events

    def _take_queued(self) -> bytes:
        events = self.take_events()
        if len(events) == 1:
            return events[0].sse  # the hub's shared bytes
        return b"".join(event.sse for event in events)

    async def fill(self) -> bytes:
        """Queue the events after `_tail` from the stream, then live ones that came meanwhile.

        Returns the encoded `lost` event to send before them if some of what the client asked for is no
        longer retained, else b"".
        """
        self.begin_read()
        try:
            events = await self._source.read_events(self.job_id, self._tail, self._fetch_batch)
        except BaseException:
            self._fetching = False
            raise
        state = await self._source.get(self.job_id) if self._lost_before(events) else None
        return self.end_read(events, state)

    @property
    def read_size(self) -> int:
        """How many events one read of the stream asks for."""
        return self._fetch_batch

    def begin_read(self) -> None:
        """A read of the events after `_tail` starts now: live events meanwhile wait to be spliced in."""
        self._behind = False
        self._fetching = True

    def end_read(self, events: list[StoredEvent], state: JobState | None) -> bytes:
        """Queue what the read begun by `begin_read` found (`read_size` at most); `state` is the job's,
        needed only if `_lost_before(events)`. Returns the `lost` event to send first, or b""."""
        self._fetching = False
        prefix = b""
        if state is not None and self._lost_before(events):
            prefix = lost_event_sse(
                state, self._paths, last_event_id=self._tail, first_retained_id=events[0].id
            )
        for event in events:
            if event.id > self._tail:
                self._queue.append(event)
                self._tail = event.id
        if len(events) == self._fetch_batch:
            self._behind = True  # more to read
        self._splice_early()
        return prefix

    def _lost_before(self, events: list[StoredEvent]) -> bool:
        """A fresh subscriber (tail 0) simply starts at the oldest retained event; one that had events and
        asked for what follows them is told when some are gone."""
        return bool(events) and events[0].id > self._tail + 1 and self._tail > 0

    def _splice_early(self) -> None:
        while (event := self._early.pop(self._tail + 1, None)) is not None:
            self._queue.append(event)
            self._tail = event.id
        if any(event_id > self._tail for event_id in self._early):
            self._behind = True  # still a gap before them: read it from the stream
        self._early = {k: v for k, v in self._early.items() if k > self._tail}
