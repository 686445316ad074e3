"""Horizontal scale on one machine: two web processes and two arq workers on one Redis.

Jobs are submitted alternately through both web processes and run on both workers; every job is watched
from both web processes, from the start, late (a replay), and cut off and resumed with `Last-Event-ID`
on the *other* web process. Every watcher of a job must get the same complete history, which is also
exactly what Redis holds. Then a web process is killed (SIGKILL) mid-stream and its watchers resume on
the survivor without a gap or a duplicate.
"""

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from redis.asyncio import Redis

from jobpulse import keys
from jobpulse.events import event_id_from_entry, from_stream_entry
from jobpulse.stack.redis_server import RedisServer
from tests.support.fleet import Fleet, jobs_run_by
from tests.support.processes import process_env
from tests.support.sse import Event

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# Each worker runs at most this many jobs at once. With twice as many jobs submitted together, each
# lasting far longer than it takes to submit them all, one worker cannot take them all: the other must
# run some. That makes "jobs ran on both workers" a certainty rather than a matter of poll timing.
MAX_JOBS_PER_WORKER = 5


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    env = process_env(
        redis_server.url,
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
        JOBPULSE_QUEUE_NAME=f"scale:{uuid.uuid4().hex[:8]}",
        JOBPULSE_PROGRESS_INTERVAL_MS="0",  # every update is an event: the histories' length is known
        JOBPULSE_WORKER_POLL_DELAY_S="0.05",
        JOBPULSE_MAX_JOBS=str(MAX_JOBS_PER_WORKER),
    )
    cluster = Fleet(env, tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Watcher:
    """One client of one job: the events it received, in order, over however many connections."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.segments: list[list[Event]] = []

    @property
    def events(self) -> list[Event]:
        return [event for segment in self.segments for event in segment]

    @property
    def last_id(self) -> str | None:
        return next((event.id for event in reversed(self.events) if event.id), None)

    async def read(self, url: str, *, resume: bool = False, until_id: int | None = None) -> None:
        """One connection to `url`: until the server ends the stream, the connection breaks, or `until_id`.

        `resume` sends `Last-Event-ID` with the last id received so far, as `EventSource` does.
        """
        headers = {"Last-Event-ID": last} if resume and (last := self.last_id) is not None else {}
        segment: list[Event] = []
        self.segments.append(segment)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            try:
                async with aconnect_sse(client, "GET", f"/jobs/{self.job_id}/events", headers=headers) as sse:
                    sse.response.raise_for_status()
                    async for message in sse.aiter_sse():
                        segment.append(Event(message.id, message.event, json.loads(message.data)))
                        if until_id is not None and message.id and int(message.id) >= until_id:
                            return
            except httpx.TransportError:
                return  # the web process went away; what arrived before is kept

    async def wait_for_id(self, at_least: int) -> None:
        while not any(event.id and int(event.id) >= at_least for event in self.events):
            await anyio.sleep(0.01)


async def submit(url: str, *, steps: int, interval_ms: int, start_delay_ms: int) -> str:
    params = {"steps": steps, "interval_ms": interval_ms, "start_delay_ms": start_delay_ms}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/jobs", json={"task": "simulate", "params": params})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def stored_history(redis: Redis, job_id: str) -> list[Event]:
    """The job's history as Redis holds it, in the shape a watcher receives it."""
    entries = await redis.xrange(keys.events_key(job_id))
    stored = [from_stream_entry(entry_id, fields) for entry_id, fields in entries]
    assert [e.id for e in stored] == [event_id_from_entry(entry_id) for entry_id, _ in entries]
    return [Event(str(e.id), e.type, json.loads(e.data)) for e in stored]


def assert_complete(history: list[Event], job_id: str, steps: int) -> None:
    """Every event of a `simulate` run once, in order: queued, running, each step, succeeded."""
    assert [int(event.id) for event in history] == list(range(1, steps + 4))
    assert all(event.data["job_id"] == job_id for event in history)
    assert [(e.event, e.data.get("status")) for e in history[:2]] == [
        ("status", "queued"),
        ("status", "running"),
    ]
    assert [e.data["current"] for e in history[2:-1] if e.event == "progress"] == list(range(1, steps + 1))
    assert history[-1].is_terminal
    assert history[-1].data["status"] == "succeeded" and history[-1].data["result"] == {"steps": steps}


async def test_two_webs_and_two_workers_give_every_watcher_the_same_complete_history(
    cluster: Fleet, redis: Redis
) -> None:
    (_, url1), (_, url2) = cluster.webs
    urls = [url1, url2]
    with anyio.fail_after(30):
        # Submitted alternately through both web processes; the start delay lets the first watchers
        # connect before the first update. Different lengths, so that mixed-up histories cannot match.
        jobs: list[tuple[str, int, str, str]] = []  # job id, steps, the web it came in by, the other one
        for n in range(2 * MAX_JOBS_PER_WORKER):
            here, there = urls[n % 2], urls[(n + 1) % 2]
            steps = 8 + n % 3
            jobs.append(
                (await submit(here, steps=steps, interval_ms=80, start_delay_ms=1500), steps, here, there)
            )

        watchers: dict[str, list[Watcher]] = {}
        async with anyio.create_task_group() as group:
            for job_id, _, here, there in jobs:
                early_here, early_there, late, resumer = (Watcher(job_id) for _ in range(4))
                watchers[job_id] = [early_here, early_there, late, resumer]
                group.start_soon(early_here.read, here)
                group.start_soon(early_there.read, there)
                group.start_soon(join_late, late, early_here, there)
                group.start_soon(cut_and_resume_elsewhere, resumer, here, there)

        for job_id, steps, _, _ in jobs:
            history = await stored_history(redis, job_id)
            assert_complete(history, job_id, steps)
            for watcher in watchers[job_id]:
                assert watcher.events == history, f"job {job_id}: a watcher's history differs from Redis's"
            resumer = watchers[job_id][3]
            assert [len(segment) for segment in resumer.segments] == [
                4,
                len(history) - 4,
            ]  # cut, then resumed

    ran = [jobs_run_by(worker) for worker in cluster.workers]
    assert all(ran), f"a worker ran no job: {ran}"
    assert sorted(ran[0] + ran[1]) == sorted(job_id for job_id, *_ in jobs)  # each job ran once, once only


async def join_late(watcher: Watcher, early: Watcher, url: str) -> None:
    """Connects without `Last-Event-ID` once the job is under way (two steps in): it replays, then follows."""
    await early.wait_for_id(4)
    await watcher.read(url)


async def cut_and_resume_elsewhere(watcher: Watcher, here: str, there: str) -> None:
    """Leaves after the second step's event, then resumes on the other web process with `Last-Event-ID`."""
    await watcher.read(here, until_id=4)
    await watcher.read(there, resume=True)


async def test_watchers_of_a_killed_web_process_resume_on_the_other_without_gap_or_duplicate(
    cluster: Fleet, redis: Redis
) -> None:
    (doomed, doomed_url), (_, survivor_url) = cluster.webs
    steps = 20
    with anyio.fail_after(30):
        job_ids = [
            await submit(url, steps=steps, interval_ms=80, start_delay_ms=800)
            for url in (doomed_url, survivor_url, doomed_url, survivor_url)
        ]
        on_doomed = {job_id: [Watcher(job_id), Watcher(job_id)] for job_id in job_ids}
        # Half the jobs are also watched on the survivor from the start: the resumed watchers of those
        # join a channel its hub already holds; for the other half, their resumption subscribes it.
        on_survivor = {job_id: Watcher(job_id) for job_id in job_ids[::2]}

        async def follow_through_the_kill(watcher: Watcher) -> None:
            await watcher.read(doomed_url)
            while not watcher.events or not watcher.events[-1].is_terminal:
                await watcher.read(survivor_url, resume=True)

        async with anyio.create_task_group() as group:
            for watcher in on_survivor.values():
                group.start_soon(watcher.read, survivor_url)
            for pair in on_doomed.values():
                for watcher in pair:
                    group.start_soon(follow_through_the_kill, watcher)
            # Every watcher on the doomed process is a few steps in when it dies.
            for pair in on_doomed.values():
                for watcher in pair:
                    await watcher.wait_for_id(5)
            doomed.signal(signal.SIGKILL)
        assert doomed.wait(5) == -signal.SIGKILL

        for job_id in job_ids:
            history = await stored_history(redis, job_id)
            assert_complete(history, job_id, steps)
            for watcher in on_doomed[job_id]:
                assert watcher.events == history
                cut = watcher.segments[0]
                assert 5 <= int(cut[-1].id) < len(history), "the kill was meant to cut the stream mid-job"
            if job_id in on_survivor:
                assert on_survivor[job_id].events == history
