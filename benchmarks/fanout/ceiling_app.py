"""The server's ceiling: uvicorn writing pre-encoded SSE events as fast as clients read them.

    uvicorn benchmarks.fanout.ceiling_app:streaming_app   # FastAPI + StreamingResponse
    uvicorn benchmarks.fanout.ceiling_app:raw_app         # a bare ASGI endpoint

`GET /sse?n=N` sends the same encoded `progress` event N times, one ASGI body message each (as jobpulse
sends one per event), then ends. No Redis, no parsing, no per-client work: what is left is uvicorn and
the event loop, the most any SSE design can deliver from one process on this machine.
"""

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
