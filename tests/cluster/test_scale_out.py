"""Two web processes and two arq workers (the real entry points) with job events on a 3-shard cluster.

Jobs are submitted alternately through both web processes until their slots fall on every primary, and
watched from both web processes: from the start, late (a replay), and cut off and resumed with
`Last-Event-ID` on the *other* web process. Every watcher's history is exactly the cluster's.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from jobpulse.stack.redis_cluster import RedisCluster
from jobpulse.stack.redis_server import RedisServer
from tests.cluster.conftest import (
    SlotOwners,
    Watcher,
    assert_complete,
    cluster_client,
    stored_history,
    submit_on_every_shard,
)
from tests.support.fleet import Fleet, jobs_run_by
from tests.support.processes import process_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# With more jobs submitted together than one worker runs at once, each lasting longer than it takes to
# submit them all, both workers must run some.
MAX_JOBS_PER_WORKER = 3


@pytest.fixture
def fleet(redis_cluster: RedisCluster, redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    env = process_env(
        redis_cluster.url,
        JOBPULSE_REDIS_CLUSTER="1",
        JOBPULSE_QUEUE_REDIS_URL=redis_server.url,
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
        JOBPULSE_QUEUE_NAME=f"cluster-scale:{uuid.uuid4().hex[:8]}",
        JOBPULSE_PROGRESS_INTERVAL_MS="0",  # every update is an event: the histories' length is known
        JOBPULSE_WORKER_POLL_DELAY_S="0.05",
        JOBPULSE_MAX_JOBS=str(MAX_JOBS_PER_WORKER),
    )
    fleet = Fleet(env, tmp_path)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


async def join_late(watcher: Watcher, early: Watcher, url: str) -> None:
    """Connects without `Last-Event-ID` once the job is under way: it replays, then follows."""
    await early.wait_for_id(4)
    await watcher.read(url)


async def cut_and_resume_elsewhere(watcher: Watcher, here: str, there: str) -> None:
    """Leaves after the second step's event, then resumes on the other web process with `Last-Event-ID`."""
    await watcher.read(here, until_id=4)
    await watcher.read(there, resume=True)


async def test_jobs_on_every_shard_give_every_watcher_on_either_web_the_stored_history(
    fleet: Fleet, redis_cluster: RedisCluster
) -> None:
    url1, url2 = fleet.urls
    with anyio.fail_after(40):
        async with (
            httpx.AsyncClient(base_url=url1, timeout=30) as one,
            httpx.AsyncClient(base_url=url2, timeout=30) as two,
        ):
            # The start delay lets the first watchers connect before the first update.
            job_ids = await submit_on_every_shard(
                redis_cluster,
                [one, two],
                per_shard=2,
                at_least=2 * MAX_JOBS_PER_WORKER + 1,
                steps=12,
                interval_ms=30,
                start_delay_ms=1000,
            )
        owners = SlotOwners(redis_cluster)
        shards = {owners.port_of(job_id) for job_id in job_ids}
        assert shards == {node.port for node in redis_cluster.primaries()}  # all three primaries

        watchers: dict[str, list[Watcher]] = {}
        async with anyio.create_task_group() as group:
            for n, job_id in enumerate(job_ids):
                here, there = fleet.urls[n % 2], fleet.urls[(n + 1) % 2]
                early_here, early_there, late, resumer = (Watcher(job_id) for _ in range(4))
                watchers[job_id] = [early_here, early_there, late, resumer]
                group.start_soon(early_here.read, here)
                group.start_soon(early_there.read, there)
                group.start_soon(join_late, late, early_here, there)
                group.start_soon(cut_and_resume_elsewhere, resumer, here, there)

    store = cluster_client(redis_cluster)
    try:
        for job_id in job_ids:
            history = await stored_history(store, job_id)
            assert_complete(history, job_id, 12)
            for watcher in watchers[job_id]:
                assert watcher.events == history, (
                    f"job {job_id}: a watcher's history differs from the cluster's"
                )
                assert not watcher.refusals, watcher.refusals
            resumer = watchers[job_id][3]
            assert [len(segment) for segment in resumer.segments] == [4, len(history) - 4]  # cut, resumed
    finally:
        await store.aclose()

    ran = [jobs_run_by(worker) for worker in fleet.workers]
    assert all(ran), f"a worker ran no job: {ran}"
    assert sorted(ran[0] + ran[1]) == sorted(job_ids)  # each job ran once, once only
