"""`GET /jobs/{id}/events`: history, live events, resume, ending — on real Redis, arq and uvicorn."""

import asyncio
import json
import random
import socket
import time
from typing import Annotated

import anyio
import pytest
from fastapi import Header, Query, Response
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from jobpulse import keys
from jobpulse.status import JobStatus
from jobpulse.web.access.guards import JobReaderDep
from jobpulse.web.deps import ServicesDep
from jobpulse.web.routes.events import StreamRoute, stream_events
from jobpulse.web.services import WEB_CLIENT_NAME
from jobpulse.web.streaming.stream_lane import StreamLane
from tests.conftest import Stack, StackFactory
from tests.support.sse import Event, ids, read_events

pytestmark = pytest.mark.anyio


def assert_complete(events: list[Event]) -> None:
    """Ids 1..N without gap or duplicate, one terminal event, and it is the last."""
    assert ids(events) == list(range(1, len(events) + 1))
    assert [event.is_terminal for event in events].count(True) == 1
    assert events[-1].is_terminal


async def test_stream_carries_status_and_progress_fields(stack: Stack) -> None:
    job = await stack.submit(steps=4, interval_ms=20)
    events = await read_events(stack.client, job["id"])
    assert_complete(events)
    assert [e.data["status"] for e in events if e.event == "status"] == ["queued", "running", "succeeded"]
    progress = [e for e in events if e.event == "progress"]
    assert progress[-1].data["progress"] == 100
    for event in events:
        assert event.data["job_id"] == job["id"]
        assert abs(event.data["ts"] - time.time()) < 60
    first = progress[0].data
    assert {"progress", "message", "current", "total"} <= first.keys()
    assert first["current"] == 1 and first["total"] == 4
    succeeded = events[-1].data
    assert succeeded["attempt"] == 1
    assert succeeded["result"] == {"steps": 4}


async def test_many_jobs_many_subscribers_see_identical_gap_free_histories(make_stack: StackFactory) -> None:
    """5 jobs x 12 subscribers joining before, during and after the run all get the same full history."""
    stack = await make_stack(progress_interval_ms=0, max_jobs=10)
    jobs = [await stack.submit(steps=40, interval_ms=5, start_delay_ms=200) for _ in range(5)]
    rng = random.Random(7)

    async def late_reader(job_id: str) -> list[Event]:
        await asyncio.sleep(rng.uniform(0, 0.8))
        return await read_events(stack.client, job_id)

    tasks = {job["id"]: [asyncio.create_task(late_reader(job["id"])) for _ in range(12)] for job in jobs}
    for job_id, readers in tasks.items():
        histories = await asyncio.gather(*readers)
        for history in histories:
            assert_complete(history)
            assert history == histories[0]
        assert len(histories[0]) == 43  # queued, running, 40 progress, succeeded
        stored = await stack.web.services.store.read_events(job_id, 0, 1000)
        assert [json.loads(e.data) for e in stored] == [e.data for e in histories[0]]


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_from_the_middle_gets_exactly_the_rest(stack: Stack, how: str) -> None:
    job = await stack.submit(steps=30, interval_ms=20)
    first = await read_events(stack.client, job["id"], limit=5)
    resume_at = first[-1].id
    if how == "header":
        rest = await read_events(stack.client, job["id"], last_event_id=resume_at)
    else:
        rest = await read_events(stack.client, job["id"], query=f"?last_event_id={resume_at}")
    assert_complete(first + rest)
    everything = await read_events(stack.client, job["id"])
    assert first + rest == everything


async def test_watchers_of_an_already_watched_job_read_state_and_history_in_one_round_trip(
    make_stack: StackFactory,
) -> None:
    """Later watchers take `Hub.open_watched` and one script read; their answers match the first's path."""
    stack = await make_stack(stream_maxlen=10, with_worker=False)
    job = await stack.submit(steps=1, interval_ms=0)  # `queued` is event 1; no worker runs it
    store, hub = stack.web.services.store, stack.web.services.hub
    await store.set_status(job["id"], JobStatus.RUNNING, attempt=1)  # event 2
    for progress in range(1, 30):  # events 3..31: 22..31 are retained
        await store.set_progress(job["id"], attempt=1, progress=progress)
    first = asyncio.create_task(read_events(stack.client, job["id"]))  # subscribes the job's channel
    with anyio.fail_after(5):
        while hub.subscription_count < 1:
            await anyio.sleep(0.01)

    async def evalsha_calls() -> int:
        stats = await stack.redis.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    await store.state_and_events(job["id"], 0, 1)  # the script is loaded: one EVALSHA per read from now
    before = await evalsha_calls()
    late = asyncio.create_task(read_events(stack.client, job["id"]))
    resumed = asyncio.create_task(read_events(stack.client, job["id"], last_event_id="2"))
    ahead = await stack.client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": "99"})
    assert ahead.status_code == 400 and "ahead of this job's newest event (31)" in ahead.text
    with anyio.fail_after(5):
        while stack.web.services.counters.delivered < 3 * 10:  # all three have their replay
            await anyio.sleep(0.01)
    await store.set_status(job["id"], JobStatus.CANCELLED, attempt=1)  # one EVALSHA, the append
    history = await first
    assert ids(history) == list(range(22, 33)) and history[-1].data["status"] == "cancelled"
    assert await late == history
    lost, *rest = await resumed
    assert lost.event == "lost" and lost.data["last_event_id"] == 2 and lost.data["first_retained_id"] == 22
    assert rest == history
    assert hub.subscription_count == 0
    # One read each for the three, no separate state and history reads, and the append.
    assert await evalsha_calls() - before == 3 + 1
    at_the_end = await stack.client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": "32"})
    assert at_the_end.status_code == 204


async def test_header_wins_over_query_parameter(stack: Stack) -> None:
    """A browser reconnects to the URL it started with, sending its newest id in the header."""
    job = await stack.submit(steps=3, interval_ms=0)
    everything = await read_events(stack.client, job["id"])
    rest = await read_events(stack.client, job["id"], last_event_id="3", query="?last_event_id=1")
    assert rest == everything[3:]


async def test_late_subscriber_of_finished_job_gets_history_and_stream_closes(stack: Stack) -> None:
    job = await stack.submit(steps=5, interval_ms=0)
    await read_events(stack.client, job["id"])
    started = time.monotonic()
    events = await read_events(stack.client, job["id"], deadline_s=5)
    assert time.monotonic() - started < 2
    assert_complete(events)


async def test_reconnect_after_terminal_event_gets_204(stack: Stack) -> None:
    job = await stack.submit(steps=2, interval_ms=0)
    events = await read_events(stack.client, job["id"])
    response = await stack.client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": events[-1].id})
    assert response.status_code == 204
    assert response.content == b""
    response = await stack.client.get(f"/jobs/{job['id']}/events?last_event_id={events[-1].id}")
    assert response.status_code == 204


async def test_resume_before_retained_history_signals_lost_events(make_stack: StackFactory) -> None:
    stack = await make_stack(stream_maxlen=10, progress_interval_ms=0)
    job = await stack.submit(steps=30, interval_ms=0)
    with anyio.fail_after(10):
        while (await stack.job(job["id"]))["status"] != "succeeded":
            await anyio.sleep(0.05)
    events = await read_events(stack.client, job["id"])
    assert ids(events)[0] == 24  # only the newest 10 of 33 events are retained
    resumed = await read_events(stack.client, job["id"], last_event_id="2")
    lost, rest = resumed[0], resumed[1:]
    assert lost.event == "lost" and lost.id == ""
    assert lost.data["last_event_id"] == 2
    assert lost.data["first_retained_id"] == 24
    assert lost.data["job"]["status"] == "succeeded"
    assert rest == events


async def test_stream_headers_opening_comment_and_keepalive(make_stack: StackFactory) -> None:
    stack = await make_stack(keepalive_s=0.3, sse_retry_ms=1234)
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=60_000)
    async with stack.client.stream("GET", f"/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        # The connection ends with the stream: a proxy must not queue its next request behind it.
        assert response.headers["connection"] == "close"
        received = b""
        with anyio.fail_after(5):
            async for chunk in response.aiter_bytes():
                received += chunk
                if received.count(b": keep-alive") >= 2:
                    break
    assert received.startswith(b": connected\nretry: 1234\nid: 1\nevent: status\n")


async def test_opening_bytes_arrive_before_any_event(stack: Stack) -> None:
    """A client resuming at the newest event of a waiting job gets bytes and the retry hint at once."""
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=60_000)
    await anyio.sleep(0.3)  # let it start: `running` is event 2
    state = await stack.job(job["id"])
    headers = {"Last-Event-ID": str(state["last_event_id"])}
    async with stack.client.stream("GET", f"/jobs/{job['id']}/events", headers=headers) as response:
        with anyio.fail_after(2):
            first = await response.aiter_bytes().__anext__()
    assert first == b": connected\nretry: 2000\n"


async def test_unknown_job_stream_is_404_json(stack: Stack) -> None:
    response = await stack.client.get("/jobs/AAAAAAAAAAAAAAAAAAAAAA/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "No job" in response.json()["detail"]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "0-5", "9" * 30, "1 2", "\uff11"])
async def test_malformed_last_event_id_is_400(stack: Stack, bad: str) -> None:
    job = await stack.submit(steps=1, interval_ms=0)
    response = await stack.client.get(f"/jobs/{job['id']}/events", headers={b"Last-Event-ID": bad.encode()})
    assert response.status_code == 400, response.text
    assert "Last-Event-ID" in response.json()["detail"]
    response = await stack.client.get(f"/jobs/{job['id']}/events", params={"last_event_id": bad})
    assert response.status_code == 400


async def test_last_event_id_ahead_of_history_is_400(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=60_000)
    response = await stack.client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": "99"})
    assert response.status_code == 400
    assert "ahead" in response.json()["detail"]


async def test_empty_last_event_id_means_from_the_start(stack: Stack) -> None:
    job = await stack.submit(steps=2, interval_ms=0)
    events = await read_events(stack.client, job["id"], last_event_id="")
    assert_complete(events)


async def test_disconnecting_client_is_released_at_once(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=60_000)
    hub = stack.web.services.hub
    channel = keys.live_channel(job["id"])
    async with stack.client.stream("GET", f"/jobs/{job['id']}/events") as response:
        await response.aiter_bytes().__anext__()
        assert hub.subscription_count == 1
        assert (await stack.redis.pubsub_numsub(channel))[0][1] == 1
    with anyio.fail_after(3):
        while hub.subscription_count or (await stack.redis.pubsub_numsub(channel))[0][1]:
            await anyio.sleep(0.02)
    assert hub.channel_count == 0


async def stalled_reader(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection with a tiny receive buffer that reads the response headers, then nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def test_slow_reader_neither_blocks_others_nor_loses_events(make_stack: StackFactory) -> None:
    """A client that stops reading keeps bounded memory in the hub, and still gets everything later."""
    stack = await make_stack(progress_interval_ms=0, subscriber_buffer=16)
    job = await stack.submit(steps=20_000, interval_ms=0, start_delay_ms=500)
    path = f"/jobs/{job['id']}/events"
    slow_reader, slow_writer = await stalled_reader(stack.web.port, path)
    fast = await read_events(stack.client, job["id"], deadline_s=60)
    assert_complete(fast)
    assert len(fast) == 20_003
    hub = stack.web.services.hub
    with anyio.fail_after(3):
        while hub.subscription_count > 1:  # the fast client's is released as its stream ends
            await anyio.sleep(0.01)
    (slow_subscription,) = [s for c in hub._channels.values() for s in c.subscriptions]
    assert len(slow_subscription._queue) <= 16 and len(slow_subscription._early) <= 16
    assert slow_subscription._tail < 20_003, "the slow client was not actually held back"
    # Now the slow client reads: it gets the whole history, in order, re-read from Redis.
    received = b""
    with anyio.fail_after(20):
        while b'"status":"succeeded"' not in received:
            chunk = await slow_reader.read(65536)
            assert chunk, "stream closed early"
            received += chunk
    slow_writer.close()
    slow_ids = [int(line[4:]) for line in received.split(b"\n") if line.startswith(b"id: ")]
    assert slow_ids == list(range(1, 20_004))


async def test_a_client_that_takes_no_bytes_is_dropped_after_the_send_timeout(
    make_stack: StackFactory,
) -> None:
    """A dead peer (no FIN: a pulled cable, a frozen laptop) must not hold its stream until TCP gives up."""
    stack = await make_stack(progress_interval_ms=0, send_timeout_s=1)
    job = await stack.submit(steps=20_000, interval_ms=0, start_delay_ms=300)
    _, writer = await stalled_reader(stack.web.port, f"/jobs/{job['id']}/events")
    hub = stack.web.services.hub
    assert hub.subscription_count == 1
    # It reads nothing more, and keeps its socket open: the server's sends back up, then time out.
    with anyio.fail_after(30):
        while hub.subscription_count:
            await anyio.sleep(0.05)
    assert (await stack.job(job["id"]))["status"] in ("running", "succeeded")
    assert stack.web.services.counters.slow_dropped == 1  # jobpulse_web_slow_clients_dropped_total
    writer.close()


async def test_hub_survives_pubsub_connection_kill_without_gap(make_stack: StackFactory) -> None:
    stack = await make_stack(progress_interval_ms=0)
    job = await stack.submit(steps=200, interval_ms=5, start_delay_ms=300)
    reader = asyncio.create_task(read_events(stack.client, job["id"]))
    await anyio.sleep(0.6)
    (hub_connection,) = [
        client
        for client in await stack.redis.client_list()
        if client.get("name") == WEB_CLIENT_NAME and int(client["sub"]) > 0
    ]
    assert await stack.redis.client_kill_filter(_id=hub_connection["id"]) == 1
    events = await reader
    assert_complete(events)
    assert len(events) == 203
    assert stack.web.services.hub.reconnects >= 1


async def test_keepalives_never_reach_a_client_library_as_events(make_stack: StackFactory) -> None:
    """Regression: comment blocks ending in a blank line surfaced in httpx-sse as empty `message` events."""
    stack = await make_stack(keepalive_s=0.1)
    job = await stack.submit(steps=3, interval_ms=300, start_delay_ms=500)
    events = await read_events(stack.client, job["id"])
    assert_complete(events)
    assert {event.event for event in events} == {"status", "progress"}


async def test_garbage_on_a_live_channel_is_ignored(stack: Stack) -> None:
    job = await stack.submit(steps=20, interval_ms=20, start_delay_ms=300)
    reader = asyncio.create_task(read_events(stack.client, job["id"]))
    await anyio.sleep(0.2)
    await stack.redis.publish(keys.live_channel(job["id"]), b"not an event")
    await stack.redis.publish(keys.live_channel(job["id"]), b"\xff\n\xfe\n1\n{}")
    events = await reader
    assert_complete(events)
    assert stack.web.services.hub.reconnects == 0


async def test_new_streams_are_refused_with_503_once_shutdown_began(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=60_000)
    stack.web.services.hub.close_streams()
    response = await stack.client.get(f"/jobs/{job['id']}/events")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "shutting down" in response.json()["detail"]


async def test_streams_of_a_job_gone_from_redis_end_instead_of_idling_for_ever(
    make_stack: StackFactory,
) -> None:
    """Redis lost the job (restarted without persistence, flushed): its watchers learn it, others carry on."""
    stack = await make_stack(with_worker=False, keepalive_s=0.2)
    gone, kept = await stack.submit(steps=1, interval_ms=0), await stack.submit(steps=1, interval_ms=0)
    async with anyio.create_task_group() as tasks:
        ended: list[float] = []
        started = time.monotonic()

        async def watch_gone() -> None:
            await read_events(stack.client, gone["id"], deadline_s=10)
            ended.append(time.monotonic() - started)

        async def long_poll_gone() -> None:
            response = await stack.client.get(f"/jobs/{gone['id']}?wait=30")
            assert response.status_code == 404
            ended.append(time.monotonic() - started)

        tasks.start_soon(watch_gone)
        tasks.start_soon(long_poll_gone)
        kept_stream = await stack.client.send(
            stack.client.build_request("GET", f"/jobs/{kept['id']}/events"), stream=True
        )
        await anyio.sleep(0.3)
        await stack.redis.delete(keys.state_key(gone["id"]), keys.events_key(gone["id"]))
    assert len(ended) == 2 and max(ended) < 3, ended
    assert (await stack.client.get(f"/jobs/{gone['id']}/events")).status_code == 404
    await anyio.sleep(0.5)  # several checks later, the existing job's stream is still open
    assert not kept_stream.is_closed and stack.web.services.hub.subscription_count == 1
    await kept_stream.aclose()


async def _answer(
    stack: Stack, method: str, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (but the date) and the body, or for a stream its opening bytes."""
    async with stack.client.stream(method, url, headers=headers) as response:
        with anyio.fail_after(5):
            if response.status_code == 200:
                body = await response.aiter_bytes().__anext__()
            else:
                body = await response.aread()
    kept = {name: value for name, value in response.headers.items() if name != "date"}
    return response.status_code, kept, body


async def _past_the_lane(lane: StreamLane, scope: Scope, receive: Receive, send: Send) -> None:
    await lane.inner(scope, receive, send)


async def test_the_stream_lane_and_route_answer_as_fastapis_router_and_dependency_solving_would(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams skip FastAPI's router (`StreamLane`) and dependency solving (`StreamRoute`): same
    answer to every request.

    Each request is sent twice, once as served and once through FastAPI's own router, middleware stack
    and `APIRoute.handle` (its request wrapper, dependency solving and route-level exception handling),
    keys, tokens and CORS on.
    """
    key = "key-for-tests-0123456789"
    origin = "http://app.example"
    stack = await make_stack(
        with_worker=False,
        api_keys=(SecretStr(key),),
        token_secret=SecretStr("s" * 32),
        token_ttl_s=600,
        cors_origins=(origin,),
    )
    stack.client.headers["Authorization"] = f"Bearer {key}"
    queued, other, ended = [(await stack.submit(steps=1, interval_ms=0)) for _ in range(3)]
    assert (await stack.client.delete(f"/jobs/{ended['id']}")).status_code == 200
    del stack.client.headers["Authorization"]
    token, other_token = queued["token"], other["token"]
    path = f"/jobs/{queued['id']}/events"
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", path, {}),
        ("GET", path, {"Authorization": f"Basic {key}"}),
        ("GET", path, {"Authorization": "Bearer"}),
        ("GET", path, {"Authorization": "Bearer wrong"}),
        ("GET", path, {"Authorization": f"bEaReR {key}"}),
        ("GET", path, {"Authorization": f"Bearer {other_token}"}),
        ("GET", f"{path}?token={token}", {}),
        ("GET", f"{path}?token={token}", {"Origin": origin}),
        ("GET", f"{path}?token={token}", {"Origin": "http://elsewhere.example"}),
        ("GET", path, {"Origin": origin}),
        ("GET", f"/jobs/{queued['id']}/events/?token={token}", {}),
        ("GET", f"{path}?token=", {}),
        ("GET", f"{path}?token=bad&token={token}", {}),
        ("GET", f"{path}?token={token}&token=bad", {}),
        ("GET", f"{path}?token={other_token}", {"Authorization": f"Bearer {token}"}),
        ("GET", f"{path}?token={token}&last_event_id=1", {"Last-Event-ID": ""}),
        ("GET", f"{path}?token={token}&last_event_id=x", {"Last-Event-ID": "1"}),
        ("GET", f"{path}?token={token}&last_event_id=1", {}),
        ("GET", f"{path}?token={token}&last_event_id=%201%20", {}),
        ("GET", f"{path}?token={token}", {"Last-Event-ID": "abc"}),
        ("GET", f"{path}?token={token}", {"Last-Event-ID": "99"}),
        ("GET", f"/jobs/{ended['id']}/events", {"Authorization": f"Bearer {key}", "Last-Event-ID": "2"}),
        ("GET", f"/jobs/{ended['id']}/events", {"Authorization": f"Bearer {key}"}),
        ("GET", "/jobs/not-an-id/events", {"Authorization": f"Bearer {key}"}),
        ("GET", "/jobs/AAAAAAAAAAAAAAAAAAAAAA/events", {"Authorization": f"Bearer {key}"}),
        ("GET", "/jobs/AAAAAAAAAAAAAAAAAAAAAA/events", {}),
        ("POST", f"{path}?token={token}", {}),
        ("HEAD", f"{path}?token={token}", {}),
        ("DELETE", path, {"Authorization": f"Bearer {key}"}),
    ]
    served = [await _answer(stack, *request) for request in requests]
    monkeypatch.setattr(StreamLane, "__call__", _past_the_lane)
    monkeypatch.setattr(StreamRoute, "handle", APIRoute.handle)
    solved = [await _answer(stack, *request) for request in requests]
    for request, ours, fastapis in zip(requests, served, solved, strict=True):
        assert ours == fastapis, request
    assert {status for status, _, _ in served} == {200, 204, 307, 400, 401, 404, 405}
    assert (
        served[requests.index(("GET", f"{path}?token={token}", {"Origin": origin}))][1][
            "access-control-allow-origin"
        ]
        == origin
    )


def test_the_stream_route_refuses_an_endpoint_it_would_serve_wrongly() -> None:
    """A parameter added to `stream_events` and not to `StreamRoute`'s `_serve` fails at import, not later."""

    async def with_one_more(
        job_id: str,
        caller: JobReaderDep,
        services: ServicesDep,
        last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        last_event_id: Annotated[str | None, Query()] = None,
        since: Annotated[str | None, Query()] = None,
    ) -> Response:
        raise AssertionError

    StreamRoute("/jobs/{job_id}/events", stream_events, methods=["GET"])
    with pytest.raises(RuntimeError, match="update `_serve`"):
        StreamRoute("/jobs/{job_id}/events", with_one_more, methods=["GET"])
