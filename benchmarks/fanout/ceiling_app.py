"""The server's ceiling: uvicorn writing pre-encoded SSE events as fast as clients read them.

    uvicorn benchmarks.fanout.ceiling_app:streaming_app   # FastAPI + StreamingResponse
    uvicorn benchmarks.fanout.ceiling_app:raw_app         # a bare ASGI endpoint
    uvicorn benchmarks.fanout.ceiling_app:paced_app       # the floor of a paced fan-out

`GET /sse?n=N` sends the same encoded `progress` event N times, one ASGI body message each (as jobpulse
sends one per event), then ends. No Redis, no parsing, no per-client work: what is left is uvicorn and
the event loop, the most any SSE design can deliver from one process on this machine.

A client reading as fast as it can lets uvicorn batch: once the socket buffer is full, many events go
out per write. A fan-out of paced updates cannot: each update is one write per watcher. `paced_app` is
that floor: `GET /paced/{group}?steps=S&interval_ms=I&delay_ms=D` — every client of a group gets the
same S progress events (with `ts`), I ms apart after D ms, each encoded once, then a terminal status
event; one shared future wakes the group's clients. No Redis, no history, no slow-client handling.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

# The size and shape of a jobpulse progress event (about 190 bytes).
EVENT = (
    b"id: 42\nevent: progress\n"
    b'data: {"job_id":"0123456789abcdef0123456789abcdef","ts":1700000000.123456,"progress":42.0,'
    b'"message":"step 42/100","current":42,"total":100}\n\n'
)
_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]

streaming_app = FastAPI(title="ceiling: StreamingResponse")


@streaming_app.get("/sse")
async def sse(n: int = 10_000) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for _ in range(n):
            yield EVENT

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    query = parse_qs(scope.get("query_string", b"").decode())
    if scope["path"] != "/sse":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    n = int(query.get("n", ["10000"])[0])
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    for _ in range(n):
        await send({"type": "http.response.body", "body": EVENT, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Ticker:
    """One group's updates: event k at start + (k-1) * interval, encoded once, a shared wake-up each."""

    def __init__(self, group: str, steps: int, interval_s: float, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.group = group
        self.steps = steps
        self.events: list[bytes] = []
        self.changed: asyncio.Future[None] = loop.create_future()
        self._task = loop.create_task(self._run(steps, interval_s, delay_s))

    async def _run(self, steps: int, interval_s: float, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(delay_s)
        started = loop.time()
        for step in range(1, steps + 2):
            await asyncio.sleep(max(0.0, started + (step - 1) * interval_s - loop.time()))
            if step <= steps:
                data = (
                    f'{{"job_id":"{self.group}","ts":{time.time()},"progress":{100 * step / steps},'
                    f'"message":"step {step}/{steps}","current":{step},"total":{steps}}}'
                )
                event = f"id: {step}\nevent: progress\ndata: {data}\n\n"
            else:
                event = (
                    f'id: {step}\nevent: status\ndata: {{"job_id":"{self.group}","status":"succeeded"}}\n\n'
                )
            self.events.append(event.encode())
            done, self.changed = self.changed, loop.create_future()
            done.set_result(None)


_tickers: dict[str, _Ticker] = {}


async def paced_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await raw_app(scope, receive, send)  # lifespan
        return
    if not scope["path"].startswith("/paced/"):
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    group = scope["path"].removeprefix("/paced/")
    query = {k: int(v[0]) for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    ticker = _tickers.get(group)
    if ticker is None:
        ticker = _tickers[group] = _Ticker(
            group,
            query.get("steps", 100),
            query.get("interval_ms", 10) / 1000,
            query.get("delay_ms", 0) / 1000,
        )
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b": connected\n", "more_body": True})
    sent = 0
    while sent <= ticker.steps:
        if sent == len(ticker.events):
            await ticker.changed
        pending = ticker.events[sent:]
        sent += len(pending)
        await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
