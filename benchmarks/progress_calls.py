"""What `progress()` costs a task: per call in a hot loop (coalesced), and per published update.

    .venv/bin/python -m benchmarks.progress_calls --calls 1000000 --uncoalesced 20000
    .venv/bin/python -m benchmarks.progress_calls --redis both    # one node, then a Redis Cluster

Starts a private Redis (`--redis`: one node; or a 3-shard Redis Cluster, 3 primaries + 3 replicas, with
the queue on a node of its own, `benchmarks.redis_deployment`) and drives `ProgressReporter`s the way
tasks do, through the store the worker builds, with its Redis clients (`jobpulse.worker.redis_pool.
worker_redis` for the queue and, on one node, the store: its pool and retries; the store's cluster
client on a cluster): `--calls` updates of one job as fast as the loop goes with the default 100 ms
coalescing window; then `--uncoalesced` updates with coalescing off (every update published), from one
job and from `--jobs` jobs reporting at once (spread over the shards by their random ids), each with the
worker's store (progress writes made while another is on its way go together as one pipeline) and
without batching. Prints wall and CPU time per call, the events written, the append-script calls per
published update (from `INFO commandstats` on every primary), which must be one: the script does the
stream, the state and the announcement in one call, and a batch is one round trip for several of them;
and the CPU Redis spent per update (every server process, replicas and their housekeeping included).
"""

import argparse
import asyncio
import time
from typing import Any

from benchmarks.redis_deployment import KINDS, RedisDeployment, redis_deployment
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.arq_settings import store_redis_for
from jobpulse.worker.progress import REPORTER_KEY, ProgressReporter, progress
from jobpulse.worker.redis_pool import worker_redis

LABELS = {"node": "one node", "cluster": "cluster"}


def script_calls(deployment: RedisDeployment) -> int:
    """Calls of the append script so far, on every primary: the reporter's only command, one round trip
    each (a pipeline is one round trip for several).

    (`total_commands_processed` would also count the commands the script runs inside Redis.)
    """
    total = 0
    for node in deployment.primaries:
        with node.client() as redis:
            stats = redis.info("commandstats")
        total += sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))
    return total


def worker_store(settings: Settings, queue_redis: Any, *, batch: bool) -> tuple[JobStore, Any]:
    """The store as the worker builds it (`jobpulse.worker.arq_settings`), on `queue_redis` (the worker's
    `worker_redis`), with `batch` for its progress batching; and the store's Redis, to close."""
    # The worker's own choice of the store's client (one node: arq's; a cluster: its cluster client).
    store_redis = store_redis_for(settings, queue_redis)
    return JobStore(store_redis, settings, queue_redis=queue_redis, batch_progress=batch), store_redis


async def run(
    deployment: RedisDeployment,
    store: JobStore,
    settings: Settings,
    calls: int,
    interval_s: float,
    jobs: int,
    batch: bool,
) -> str:
    """`calls` updates in all, spread over `jobs` jobs that report at the same time, as a worker's do."""
    job_ids = [new_job_id() for _ in range(jobs)]
    for job_id in job_ids:
        await store.create(job_id, "simulate", {})
        await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    reporters = [ProgressReporter(store, job_id, 1, interval_s) for job_id in job_ids]
    steps = calls // jobs

    async def report(reporter: ProgressReporter) -> None:
        ctx = {REPORTER_KEY: reporter}
        for step in range(1, steps):  # the last step, 100 %, is always published: leave it out
            await progress(ctx, current=step, total=steps, message="working")
        await reporter.flush()

    before_events = await events_written(store, job_ids)
    before_calls = script_calls(deployment)
    redis_cpu = sum(deployment.cpu_seconds().values())
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(report(reporter) for reporter in reporters))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    redis_cpu = sum(deployment.cpu_seconds().values()) - redis_cpu
    calls_made = script_calls(deployment) - before_calls
    events = await events_written(store, job_ids) - before_events
    made = jobs * (steps - 1)
    per_update = calls_made / events if events else float("nan")
    # Coalesced, a handful of events in seconds of Redis's own housekeeping: no figure per update.
    redis_us = f"{1e6 * redis_cpu / events:.1f}" if events and not interval_s else "-"
    return (
        f"{LABELS[deployment.kind]:>8} {interval_s * 1000:>8.0f} ms {jobs:>5d} {'yes' if batch else 'no':>7} "
        f"{made:>10d} {1e6 * wall / made:>9.2f} {1e6 * cpu / made:>9.2f} {events:>8d} {per_update:>14.2f} "
        f"{redis_us:>10}"
    )


async def events_written(store: JobStore, job_ids: list[str]) -> int:
    total = 0
    for job_id in job_ids:
        state = await store.get(job_id)
        assert state is not None
        total += state.last_event_id
    return total


HEADER = (
    f"{'redis':>8} {'window':>11} {'jobs':>5} {'batched':>7} {'calls':>10} {'µs wall':>9} {'µs CPU':>9} "
    f"{'events':>8} {'trips/update':>14} {'redis µs':>10}"
)


async def measure(deployment: RedisDeployment, args: argparse.Namespace) -> list[str]:
    settings = deployment.settings()
    queue_redis = worker_redis(settings)
    stores = {batch: worker_store(settings, queue_redis, batch=batch) for batch in (False, True)}
    try:
        rows = [await run(deployment, stores[True][0], settings, args.calls, 0.1, 1, True)]
        for jobs in (1, args.jobs):
            for batch in (False, True):
                store = stores[batch][0]
                rows.append(await run(deployment, store, settings, args.uncoalesced, 0.0, jobs, batch))
    finally:
        for _, store_redis in stores.values():
            if store_redis is not queue_redis:
                await store_redis.aclose()
        await queue_redis.aclose()
    return rows


async def main(args: argparse.Namespace) -> None:
    rows = [HEADER]
    for kind in KINDS if args.redis == "both" else [args.redis]:
        with redis_deployment(kind) as deployment:
            rows += await measure(deployment, args)
    print("\n".join(rows))  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000, help="coalesced calls (100 ms window)")
    parser.add_argument("--uncoalesced", type=int, default=20_000, help="calls with coalescing off")
    parser.add_argument("--jobs", type=int, default=50, help="jobs reporting at once, for the last two rows")
    parser.add_argument(
        "--redis",
        choices=["node", "cluster", "both"],
        default="node",
        help="one Redis node; a 3-shard Redis Cluster with the queue on a node of its own; or both in turn",
    )
    asyncio.run(main(parser.parse_args()))
