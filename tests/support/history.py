"""A stand-in for a job's Redis stream, for subscription logic tested without Redis."""

import asyncio
from collections.abc import Callable

from jobpulse.events import StoredEvent
from jobpulse.store import JobState
from jobpulse.web.streaming.subscription import Subscription


def event(event_id: int, final: bool = False) -> StoredEvent:
    return StoredEvent(
        id=event_id, type="status" if final else "progress", data=f'{{"n":{event_id}}}', final=final
    )


class History:
    """A stand-in for the Redis stream that can run code in the middle of a read, to stage races."""

    def __init__(self, count: int) -> None:
        self.events = [event(i) for i in range(1, count + 1)]
        self.during_read: Callable[[], None] | None = None
        self.reads = 0

    async def read_events(self, job_id: str, after: int, count: int) -> list[StoredEvent]:
        self.reads += 1
        snapshot = [e for e in self.events if e.id > after][:count]
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        await asyncio.sleep(0)
        return snapshot

    async def get(self, job_id: str) -> JobState | None:
        return None

    def publish(self, subscription: Subscription, final: bool = False) -> None:
        new = event(len(self.events) + 1, final)
        self.events.append(new)
        subscription.offer(new)
