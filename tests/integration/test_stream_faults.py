"""One stream's failure stays that stream's: on a real uvicorn, the others keep streaming."""

import asyncio

import anyio
import httpx
import pytest

from jobpulse.web.streaming.detached_stream import DetachedStream
from tests.conftest import StackFactory
from tests.support.sse import read_events

pytestmark = pytest.mark.anyio


async def test_a_stream_whose_tick_raises_is_cut_and_the_other_streams_keep_their_clock(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await make_stack(progress_interval_ms=0, keepalive_s=0.2)
    doomed = await stack.submit(steps=5, interval_ms=50, start_delay_ms=1_000)
    quiet = await stack.submit(steps=2, interval_ms=10, start_delay_ms=2_000)  # idle: lives on keep-alives
    real_tick = DetachedStream.tick

    def tick(self: DetachedStream, now: float) -> None:
        if self.job_id == doomed["id"]:
            raise RuntimeError("a bug in this stream")
        real_tick(self, now)

    monkeypatch.setattr(DetachedStream, "tick", tick)
    cut = asyncio.create_task(read_events(stack.client, doomed["id"]))
    with anyio.fail_after(20):
        async with stack.client.stream("GET", f"/jobs/{quiet['id']}/events") as response:
            body = await response.aread()
    assert body.count(b": keep-alive") >= 3  # the clock kept ticking this stream
    assert b'"status":"succeeded"' in body
    with pytest.raises(httpx.TransportError):  # cut without its terminal event: the client reconnects
        await cut
    monkeypatch.undo()
    resumed = await read_events(stack.client, doomed["id"], last_event_id="1")
    assert resumed[0].id == "2" and resumed[-1].data["status"] == "succeeded"
