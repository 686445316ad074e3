"""Reading SSE streams in tests through a third-party parser (httpx-sse), as API clients would."""

import json
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from httpx_sse import aconnect_sse

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.event == "status" and self.data["status"] in TERMINAL


async def read_events(
    client: httpx.AsyncClient,
    job_id: str,
    *,
    last_event_id: str | None = None,
    query: str = "",
    limit: int | None = None,
    deadline_s: float = 30,
    path: str | None = None,
) -> list[Event]:
    """Events until the server ends the stream (or `limit` events); fails the test after `deadline_s`.

    `path` is the stream's URL path when it is not `/jobs/ID/events` (a router under a prefix)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[Event] = []
    with anyio.fail_after(deadline_s):
        async with aconnect_sse(
            client, "GET", f"{path or f'/jobs/{job_id}/events'}{query}", headers=headers
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                events.append(Event(sse.id, sse.event, json.loads(sse.data)))
                if limit is not None and len(events) >= limit:
                    break
    return events


def ids(events: list[Event]) -> list[int]:
    return [int(event.id) for event in events if event.id]


async def read_to_the_end(
    client: httpx.AsyncClient, job_id: str, *, deadline_s: float = 30, through_outages: bool = False
) -> list[Event]:
    """Like a reconnecting client (EventSource): resume with the last id until the terminal event.

    `through_outages`: also after a failed request (a 503 while Redis is down, a refused connection).
    """
    events: list[Event] = []
    with anyio.fail_after(deadline_s):
        while not events or not events[-1].is_terminal:
            last = next((event.id for event in reversed(events) if event.id), None)
            try:
                events += await read_events(client, job_id, last_event_id=last, deadline_s=deadline_s)
            except httpx.HTTPError:
                if not through_outages:
                    raise
                await anyio.sleep(0.2)
    return events
