"""Per-client limits: submissions a minute (shared by every web process) and streams held open."""

import resource
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from jobpulse.web.access.limits import StreamSlots, SubmissionRate, stream_capacity
from jobpulse.web.errors import ApiError
from tests.conftest import Stack, StackFactory
from tests.support.multipart import CONTENT_TYPE, Part, multipart

pytestmark = pytest.mark.anyio

SIMULATE = {"task": "simulate", "params": {"steps": 1, "interval_ms": 0}}
# Jobs that stay running while a test holds their streams open.
LONG = {"task": "simulate", "params": {"steps": 1, "interval_ms": 0, "start_delay_ms": 30_000}}


def from_address(address: str) -> dict[str, str]:
    # uvicorn believes X-Forwarded-For from 127.0.0.1 (its default --forwarded-allow-ips), which lets one
    # test play several clients.
    return {"X-Forwarded-For": address}


async def post_job(stack: Stack, headers: dict[str, str] | None = None) -> httpx.Response:
    return await stack.client.post("/jobs", json=SIMULATE, headers=headers or {})


def assert_too_many(response: httpx.Response, max_retry_after: int) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= max_retry_after
    assert "JOBPULSE_" in response.json()["detail"]
    return retry_after


async def test_submissions_over_the_limit_get_429_with_retry_after(make_stack: StackFactory) -> None:
    stack = await make_stack(submissions_per_minute=3, with_worker=False)
    for _ in range(3):
        assert (await post_job(stack)).status_code == 202
    assert_too_many(await post_job(stack), max_retry_after=20)  # one more every 60/3 s
    # uploads draw on the same allowance
    upload = multipart(Part("file", b"x", filename="x.txt"))
    response = await stack.client.post("/uploads", content=upload, headers={"Content-Type": CONTENT_TYPE})
    assert_too_many(response, max_retry_after=20)
    assert list(stack.settings.upload_dir.iterdir()) == []


async def test_other_clients_keep_their_own_allowance(make_stack: StackFactory) -> None:
    stack = await make_stack(submissions_per_minute=2, with_worker=False)
    for _ in range(2):
        assert (await post_job(stack, from_address("203.0.113.1"))).status_code == 202
    assert (await post_job(stack, from_address("203.0.113.1"))).status_code == 429
    assert (await post_job(stack, from_address("203.0.113.2"))).status_code == 202


async def test_with_keys_on_the_allowance_follows_the_key_not_the_address(make_stack: StackFactory) -> None:
    keys = ("limits-key-one-0123456789", "limits-key-two-0123456789")
    stack = await make_stack(
        submissions_per_minute=1,
        with_worker=False,
        api_keys=tuple(SecretStr(key) for key in keys),
        token_secret=SecretStr("s" * 32),
    )
    first = {"Authorization": f"Bearer {keys[0]}"}
    assert (await post_job(stack, {**first, **from_address("203.0.113.1")})).status_code == 202
    assert (await post_job(stack, {**first, **from_address("203.0.113.2")})).status_code == 429
    assert (await post_job(stack, {"Authorization": f"Bearer {keys[1]}"})).status_code == 202


async def test_every_web_process_draws_on_one_allowance(make_stack: StackFactory) -> None:
    one = await make_stack(submissions_per_minute=4, with_worker=False)
    two = await make_stack(submissions_per_minute=4, with_worker=False)
    statuses = [(await post_job(stack)).status_code for stack in (one, two, one, two, one, two)]
    assert statuses == [202, 202, 202, 202, 429, 429]


async def test_no_limit_when_set_to_zero(make_stack: StackFactory) -> None:
    stack = await make_stack(submissions_per_minute=0, with_worker=False)
    responses = [await post_job(stack) for _ in range(30)]
    assert {r.status_code for r in responses} == {202}


async def test_the_allowance_refills_at_the_steady_rate(redis: Redis) -> None:
    """The limiter itself, with a 1-second window so the test can wait for the refill."""
    limiter = SubmissionRate(redis, limit=4, window_s=1)
    for _ in range(4):
        await limiter.admit("ip:198.51.100.7")
    with pytest.raises(ApiError) as refused:
        await limiter.admit("ip:198.51.100.7")
    assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "1"}
    await anyio.sleep(0.3)  # one submission every 0.25 s
    await limiter.admit("ip:198.51.100.7")
    with pytest.raises(ApiError):
        await limiter.admit("ip:198.51.100.7")
    # the state expires once the client is back under its steady rate
    await anyio.sleep(1.1)
    assert await redis.keys("jobpulse:rate:*") == []


def test_stream_slots_are_counted_per_client_and_given_back_once() -> None:
    slots = StreamSlots(per_client=2)
    first, second = slots.take("ip:a"), slots.take("ip:a")
    with pytest.raises(ApiError) as refused:
        slots.take("ip:a")
    assert refused.value.status_code == 429
    other = slots.take("ip:b")
    first.release()
    first.release()  # a second release must not free a slot still held
    assert slots.held("ip:a") == 1
    third = slots.take("ip:a")
    with pytest.raises(ApiError):
        slots.take("ip:a")
    for slot in (second, third, other):
        slot.release()
    assert slots.held("ip:a") == slots.held("ip:b") == 0


async def until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():
            await anyio.sleep(0.02)


async def open_stream(client: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> httpx.Response:
    request = client.build_request("GET", f"/jobs/{job_id}/events", headers=headers)
    return await client.send(request, stream=True)


async def test_streams_over_the_limit_get_429_until_one_closes(make_stack: StackFactory) -> None:
    stack = await make_stack(max_streams_per_client=2)
    job: dict[str, Any] = (await stack.client.post("/jobs", json=LONG)).json()
    held = [await open_stream(stack.client, job["id"], {}) for _ in range(2)]
    try:
        assert [r.status_code for r in held] == [200, 200]
        refused = await stack.client.get(f"/jobs/{job['id']}/events")
        assert_too_many(refused, max_retry_after=5)
        # a long-poll is a held stream too; a plain read is not
        assert_too_many(await stack.client.get(f"/jobs/{job['id']}?wait=5"), max_retry_after=5)
        assert (await stack.client.get(f"/jobs/{job['id']}")).status_code == 200
        # another client is unaffected
        other = await open_stream(stack.client, job["id"], from_address("203.0.113.9"))
        assert other.status_code == 200
        await other.aclose()
    finally:
        await held.pop().aclose()
    slots = stack.web.services.streams
    await until(lambda: slots.held("ip:127.0.0.1") <= 1)  # the server notices the disconnect
    again = await open_stream(stack.client, job["id"], {})
    assert again.status_code == 200
    await again.aclose()
    await held[0].aclose()


async def test_ended_streams_and_long_polls_give_their_slots_back(make_stack: StackFactory) -> None:
    stack = await make_stack(max_streams_per_client=1)
    for _ in range(3):
        job = (await stack.client.post("/jobs", json=SIMULATE)).json()
        assert (await stack.client.get(f"/jobs/{job['id']}?wait=10")).json()["status"] == "succeeded"
        response = await stack.client.get(f"/jobs/{job['id']}/events")
        assert response.status_code == 200 and "succeeded" in response.text
    refused = await stack.client.get(f"/jobs/{'0' * 32}/events")  # unknown job: 404, no slot taken
    assert refused.status_code == 404
    assert stack.web.services.streams.held("ip:127.0.0.1") == 0


async def test_past_the_process_capacity_new_streams_get_503_before_any_200(make_stack: StackFactory) -> None:
    """Refused up front, with a time to come back, never accepted and then dropped."""
    stack = await make_stack(max_streams=2)
    job: dict[str, Any] = (await stack.client.post("/jobs", json=LONG)).json()
    held = [
        await open_stream(stack.client, job["id"], from_address(address))
        for address in ("203.0.113.1", "203.0.113.2")
    ]
    try:
        assert [r.status_code for r in held] == [200, 200]
        for address in ("203.0.113.3", "203.0.113.1"):
            refused = await stack.client.get(f"/jobs/{job['id']}/events", headers=from_address(address))
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
            assert "JOBPULSE_MAX_STREAMS" in refused.json()["detail"]
        long_poll = await stack.client.get(f"/jobs/{job['id']}?wait=5")
        assert long_poll.status_code == 503
    finally:
        await held.pop().aclose()
    slots = stack.web.services.streams
    await until(lambda: slots.total <= 1)
    again = await open_stream(stack.client, job["id"], {})
    assert again.status_code == 200
    await again.aclose()
    await held[0].aclose()


def test_the_capacity_defaults_to_what_the_open_file_limit_leaves() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert stream_capacity(0) == max(1, soft - 256)
    assert stream_capacity(500) == 500
    slots = StreamSlots(per_client=0, capacity=1)
    slot = slots.take("ip:a")
    with pytest.raises(ApiError) as refused:
        slots.take("ip:b")
    assert refused.value.status_code == 503
    slot.release()
    slots.take("ip:b").release()
    assert slots.total == 0
