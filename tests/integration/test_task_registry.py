"""Only registered tasks, only through their params models, and nothing on the queue is ever unpickled."""

import json
import pickle
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from arq.constants import job_key_prefix, result_key_prefix

from jobpulse.queue_codec import decode
from tests.conftest import Stack

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "task",
    [
        "os.system",
        "worker.tasks.simulate.simulate",
        "__import__",
        "eval",
        "SIMULATE",
        "simulate ",
        "simulate\x00",
        "cron:upload_sweeper",
        "upload_sweeper",
        "lifecycle_task",
    ],
)
async def test_only_registered_task_names_are_accepted(stack: Stack, task: str) -> None:
    response = await stack.client.post("/jobs", json={"task": task, "params": {}})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "unknown_task"


@pytest.mark.parametrize(
    "params",
    [
        {"steps": 1, "interval_ms": 0, "__class__": "os.system"},
        {"steps": 1, "interval_ms": 0, "ctx": {"redis": None}},
        {"steps": "1; rm -rf /", "interval_ms": 0},
        {"steps": {"$gt": 0}, "interval_ms": 0},
        [1, 0],
        "gASVAAAAAAAAAAB9lC4=",  # a pickle, base64-encoded
    ],
)
async def test_params_reach_a_task_only_through_its_model(stack: Stack, params: Any) -> None:
    response = await stack.client.post("/jobs", json={"task": "simulate", "params": params})
    assert response.status_code == 422, response.text


async def test_jobs_are_queued_as_json(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=1_000)
    raw = await stack.redis.get(job_key_prefix + job["id"])
    assert raw is not None and not raw.startswith(b"\x80")  # pickle's first byte
    queued = json.loads(raw)
    assert queued["f"] == "simulate"
    assert queued["a"][-1] == {"steps": 1, "interval_ms": 0, "start_delay_ms": 1_000, "fail_at": None}


class _CreatesAFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.path), "w")


async def test_a_pickle_planted_on_the_queue_is_never_unpickled(stack: Stack, tmp_path: Path) -> None:
    """Whoever can write to Redis still cannot run code on a worker."""
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(
        {"t": 1, "f": "simulate", "a": [_CreatesAFileWhenUnpickled(marker)], "k": {}, "et": 0}
    )
    job_id = "planted-pickle"
    await stack.redis.set(job_key_prefix + job_id, payload)
    await stack.redis.zadd(stack.settings.queue_name, {job_id: int(time.time() * 1000)})
    with anyio.fail_after(10):
        while (result := await stack.redis.get(result_key_prefix + job_id)) is None:
            await anyio.sleep(0.05)
    assert decode(result)["s"] is False  # arq recorded a failure to decode, as JSON
    assert not marker.exists()
    # the worker carries on with real jobs
    job = await stack.submit(steps=1, interval_ms=0)
    assert (await stack.client.get(f"/jobs/{job['id']}?wait=10")).json()["status"] == "succeeded"
