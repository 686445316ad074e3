"""The naive design, the popular tutorial done honestly: the baseline jobpulse is measured against.

    REDIS_URL=redis://... uvicorn benchmarks.fanout.naive_app:app

`GET /jobs/{id}/events` opens one Redis pub/sub subscription per SSE client and streams what the
publisher (`naive_publisher.py`: HSET + PUBLISH per update) announces, through FastAPI's
`StreamingResponse`, decoding and re-encoding each message's JSON per client. On connect it sends the
job's current state from the hash (no id: a snapshot, not an event). No history, no resume: a client
that connects late or drops misses what was published meanwhile. That is the design, not a bug here.
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis

TERMINAL = {"succeeded", "failed", "cancelled"}


def state_key(job_id: str) -> str:
    return f"naive:job:{job_id}"


def channel(job_id: str) -> str:
    return f"naive:job:{job_id}:updates"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = FastAPI(title="naive SSE", lifespan=lifespan)


@app.get("/jobs/{job_id}/events")
async def job_events(job_id: str) -> StreamingResponse:
    redis: Redis = app.state.redis

    async def stream() -> AsyncIterator[str]:
        pubsub = redis.pubsub()
        await pubsub.subscribe(channel(job_id))
        try:
            state = await redis.hgetall(state_key(job_id))  # type: ignore[misc]
            if state:
                yield f"event: state\ndata: {json.dumps(state)}\n\n"
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                update = json.loads(message["data"])
                yield f"id: {update['seq']}\nevent: {update['type']}\ndata: {json.dumps(update)}\n\n"
                if update.get("status") in TERMINAL:
                    break
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
