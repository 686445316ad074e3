"""`POST /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}` — and every bad input a user can send them."""

import asyncio
import json
from typing import Any

import anyio
import httpx
import pytest
from arq.constants import abort_jobs_ss
from redis.asyncio import Redis

from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer
from tests.conftest import Stack, StackFactory, start_stack, stop_stack
from tests.support.sse import read_events

pytestmark = pytest.mark.anyio

VALID = {"task": "simulate", "params": {"steps": 2, "interval_ms": 0}}


async def wait_for_status(stack: Stack, job_id: str, status: str, timeout: float = 10) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while (job := await stack.job(job_id))["status"] != status:
            await anyio.sleep(0.02)
    return job


async def test_submit_answers_202_with_location_and_job_view(stack: Stack) -> None:
    response = await stack.client.post("/jobs", json=VALID)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["events_url"] == f"/jobs/{job['id']}/events"
    assert job["status"] == "queued" and job["progress"] == 0 and job["attempt"] == 0
    assert job["task"] == "simulate"
    for field in ("message", "created_at", "started_at", "finished_at", "result", "error"):
        assert field in job


async def test_job_ids_are_unguessable(stack: Stack) -> None:
    ids = {(await stack.submit(steps=1, interval_ms=0))["id"] for _ in range(20)}
    assert len(ids) == 20
    for job_id in ids:
        assert len(job_id) == 22  # 128 random bits, URL-safe base64


async def test_get_shows_the_finished_job(stack: Stack) -> None:
    job = await stack.submit(steps=3, interval_ms=0)
    done = await wait_for_status(stack, job["id"], "succeeded")
    assert done["progress"] == 100
    assert done["attempt"] == 1
    assert done["result"] == {"steps": 3}
    assert done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


async def test_failing_job_reports_its_error(stack: Stack) -> None:
    job = await stack.submit(steps=10, interval_ms=0, fail_at=4)
    events = await read_events(stack.client, job["id"])
    last = events[-1]
    assert last.event == "status" and last.data["status"] == "failed"
    assert "simulated failure at step 4" in last.data["error"]
    assert [e.data["current"] for e in events if e.event == "progress"][-1] == 3
    failed = await stack.job(job["id"])
    assert failed["status"] == "failed" and "simulated failure" in failed["error"]
    assert failed["result"] is None


async def test_cancel_queued_job_never_starts(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False)
    job = await stack.submit(steps=3, interval_ms=0)
    reader = asyncio.create_task(read_events(stack.client, job["id"], deadline_s=5))
    await anyio.sleep(0.2)
    response = await stack.client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    events = await reader
    assert [e.data["status"] for e in events] == ["queued", "cancelled"]
    await stack.worker.start()
    await anyio.sleep(0.5)  # the worker polls every 50 ms: time enough to have picked it up
    after = await read_events(stack.client, job["id"])
    assert after == events
    assert (await stack.job(job["id"]))["started_at"] is None


async def test_cancel_running_job_aborts_it(stack: Stack) -> None:
    job = await stack.submit(steps=10_000, interval_ms=20)
    reader = asyncio.create_task(read_events(stack.client, job["id"], deadline_s=15))
    running = await wait_for_status(stack, job["id"], "running")
    assert running["attempt"] == 1
    await anyio.sleep(0.3)
    response = await stack.client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200
    events = await reader
    assert events[-1].data["status"] == "cancelled"
    # The worker stops the task: nothing is appended after the terminal event, and arq lets go of it.
    worker = stack.worker.worker
    assert worker is not None
    with anyio.fail_after(5):
        while worker.job_tasks:
            await anyio.sleep(0.05)
    final = await stack.job(job["id"])
    assert final["last_event_id"] == int(events[-1].id)
    assert final["status"] == "cancelled"


async def test_cancel_finished_job_is_409(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0)
    await wait_for_status(stack, job["id"], "succeeded")
    response = await stack.client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 409
    assert "already finished" in response.json()["detail"]


async def test_cancel_twice_is_409(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False)
    job = await stack.submit(steps=1, interval_ms=0)
    assert (await stack.client.delete(f"/jobs/{job['id']}")).status_code == 200
    assert (await stack.client.delete(f"/jobs/{job['id']}")).status_code == 409


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    "job_id",
    ["AAAAAAAAAAAAAAAAAAAAAA", "nope", "x" * 5000, "..%2F..%2Fetc", "%00", "a b", "jobpulse:{x}:state"],
)
async def test_unknown_or_malformed_job_id_is_404_json(stack: Stack, method: str, job_id: str) -> None:
    response = await stack.client.request(method, f"/jobs/{job_id}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]
    assert len(response.json()["detail"]) < 200  # a long id is not echoed back at length


def _submit(stack: Stack, content: bytes, content_type: str | None = "application/json") -> Any:
    headers = {"content-type": content_type} if content_type else {}
    return stack.client.post("/jobs", content=content, headers=headers)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"task": "nope", "params": {}}, 422, "Unknown task 'nope'"),
        ({"params": {"steps": 1, "interval_ms": 0}}, 422, "task"),
        ({"task": "simulate", "params": {"interval_ms": 0}}, 422, "steps"),
        ({"task": "simulate", "params": {"steps": 1, "interval_ms": 0, "evil": 1}}, 422, "evil"),
        ({"task": "simulate", "params": {"steps": "many", "interval_ms": 0}}, 422, "steps"),
        ({"task": "simulate", "params": {"steps": 0, "interval_ms": 0}}, 422, "steps"),
        ({"task": "simulate", "params": {"steps": 100_001, "interval_ms": 0}}, 422, "steps"),
        ({"task": "simulate", "params": {"steps": 1, "interval_ms": -1}}, 422, "interval_ms"),
        ({"task": "simulate", "params": {"steps": 1, "interval_ms": 60_001}}, 422, "interval_ms"),
        (
            {"task": "simulate", "params": {"steps": 1, "interval_ms": 0, "start_delay_ms": 60_001}},
            422,
            "start",
        ),
        ({"task": "simulate", "params": {"steps": 1, "interval_ms": 0, "fail_at": 0}}, 422, "fail_at"),
        ({"task": "simulate", "params": [1, 2]}, 422, "params"),
        ({"task": "simulate", "params": {"steps": 1, "interval_ms": 0}, "extra": 1}, 422, "extra"),
        ({"task": 5, "params": {}}, 422, "task"),
        ({"task": "__import__('os')", "params": {}}, 422, "Unknown task"),
        ([1, 2, 3], 422, "body"),
        ("simulate", 422, "body"),
        (None, 422, "body"),
    ],
)
async def test_invalid_submission_is_422_naming_the_problem(
    stack: Stack, body: Any, status: int, needle: str
) -> None:
    response = await _submit(stack, json.dumps(body).encode())
    assert response.status_code == status, response.text
    assert needle in response.text


@pytest.mark.parametrize(
    "content",
    [b"{", b"", b"not json", b'{"task": "simulate",}', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
)
async def test_malformed_json_is_400(stack: Stack, content: bytes) -> None:
    response = await _submit(stack, content)
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_wrong_content_type_is_415(stack: Stack, content_type: str | None) -> None:
    response = await _submit(stack, json.dumps(VALID).encode(), content_type)
    assert response.status_code == 415
    assert "Content-Type" in response.json()["detail"]


async def test_json_content_type_with_charset_is_accepted(stack: Stack) -> None:
    response = await _submit(stack, json.dumps(VALID).encode(), "application/json; charset=utf-8")
    assert response.status_code == 202


async def test_body_over_limit_is_413(stack: Stack) -> None:
    big = json.dumps({"task": "simulate", "params": {"steps": 1, "interval_ms": 0, "pad": "x" * 1_100_000}})
    response = await _submit(stack, big.encode())
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert "exceeds 1048576 bytes" in response.json()["detail"]


async def test_chunked_body_over_limit_is_413(stack: Stack) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b" " * 32_768
        yield json.dumps(VALID).encode()

    response = await stack.client.post(
        "/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_body_limit_is_configurable(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False, max_body_bytes=2048)
    padded = json.dumps({**VALID, "pad": "x" * 3000}).encode()
    assert (await _submit(stack, padded)).status_code == 413
    assert (await _submit(stack, json.dumps(VALID).encode())).status_code == 202


async def test_method_not_allowed_is_405(stack: Stack) -> None:
    assert (await stack.client.put("/jobs", json=VALID)).status_code == 405
    assert (await stack.client.post("/jobs/AAAAAAAAAAAAAAAAAAAAAA", json=VALID)).status_code == 405


async def test_server_stays_healthy_after_bad_input(stack: Stack) -> None:
    for content in (b"{", b"\x00" * 1000, b'{"task": null}'):
        await _submit(stack, content)
    job = await stack.submit(steps=2, interval_ms=0)
    events = await read_events(stack.client, job["id"])
    assert events[-1].data["status"] == "succeeded"


async def test_redis_down_gives_503_not_500_and_recovers(settings: Settings) -> None:
    """While Redis is stopped, the API answers 503 with Retry-After; once it is back, the web works again.

    (The worker side of a Redis restart is left to the fault tests of a later issue.)
    """
    with RedisServer() as server:
        redis = Redis.from_url(server.url)
        stack = await start_stack(
            settings.model_copy(update={"redis_url": server.url}), redis, with_worker=False
        )
        try:
            server.stop()
            for method, path in [
                ("POST", "/jobs"),
                ("GET", f"/jobs/{'A' * 22}"),
                ("GET", f"/jobs/{'A' * 22}/events"),
            ]:
                with anyio.fail_after(10):
                    response = await stack.client.request(method, path, json=VALID)
                assert response.status_code == 503, (method, path, response.text)
                assert response.headers["retry-after"]
                assert "Redis is unavailable" in response.json()["detail"]
            server.start()
            with anyio.fail_after(15):
                while (response := await stack.client.post("/jobs", json=VALID)).status_code == 503:
                    await anyio.sleep(0.2)
            assert response.status_code == 202
            job_id = response.json()["id"]
            assert (await stack.client.get(f"/jobs/{job_id}")).status_code == 200
            # The hub has reconnected: a stream opens and carries the new job's first event.
            (queued,) = await read_events(stack.client, job_id, limit=1, deadline_s=10)
            assert queued.data["status"] == "queued"
        finally:
            await stop_stack(stack)
            await redis.aclose()


async def test_openapi_documents_routes_and_event_schemas(stack: Stack) -> None:
    schema = (await stack.client.get("/openapi.json")).json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/events"} <= schema["paths"].keys()
    components = schema["components"]["schemas"]
    for name in ("JobView", "SubmitJob", "StatusEvent", "ProgressEvent", "LostEvent", "SimulateParams"):
        assert name in components
    events = schema["paths"]["/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {"204", "400", "404"} <= events["responses"].keys()
    submit = schema["paths"]["/jobs"]["post"]
    assert {"202", "400", "413", "415", "422"} <= submit["responses"].keys()
    assert (await stack.client.get("/docs")).status_code == 200


async def test_http_client_sees_json_errors(stack: Stack) -> None:
    response = await stack.client.get("/jobs/AAAAAAAAAAAAAAAAAAAAAA")
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(httpx.HTTPStatusError):
        response.raise_for_status()


async def test_task_stops_at_its_next_progress_call_after_cancel(make_stack: StackFactory) -> None:
    """With arq's abort poll 5 s away, `progress()` itself stops the task; no abort request is left behind."""
    stack = await make_stack(with_worker=False, worker_poll_delay_s=5, progress_interval_ms=0)
    job = await stack.submit(steps=100_000, interval_ms=1)
    await stack.worker.start()  # polls once at start, then not for 5 s
    await wait_for_status(stack, job["id"], "running")
    assert (await stack.client.delete(f"/jobs/{job['id']}")).status_code == 200
    worker = stack.worker.worker
    assert worker is not None
    with anyio.fail_after(2):
        while worker.job_tasks:
            await anyio.sleep(0.02)
        # arq drops the abort request in its own finishing step, just after the task has ended.
        while await stack.redis.zscore(abort_jobs_ss, job["id"]) is not None:
            await anyio.sleep(0.02)
    assert (await stack.job(job["id"]))["status"] == "cancelled"


async def test_cancel_aborts_a_task_that_never_reports_progress(stack: Stack) -> None:
    """arq's abort itself, not progress(), has to stop a task sleeping between updates."""
    job = await stack.submit(steps=2, interval_ms=60_000)
    await wait_for_status(stack, job["id"], "running")
    worker = stack.worker.worker
    assert worker is not None
    with anyio.fail_after(5):
        while not worker.job_tasks:
            await anyio.sleep(0.02)
    assert (await stack.client.delete(f"/jobs/{job['id']}")).status_code == 200
    with anyio.fail_after(3):
        while worker.job_tasks:
            await anyio.sleep(0.02)
    events = await read_events(stack.client, job["id"])
    assert [e.data["status"] for e in events if e.event == "status"] == ["queued", "running", "cancelled"]
