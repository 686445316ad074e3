"""What `progress()` costs a task: per call in a hot loop (coalesced), and per published update.

    .venv/bin/python -m benchmarks.progress_calls --calls 1000000 --uncoalesced 20000

Starts a private redis-server and drives `ProgressReporter`s the way tasks do, through the worker's own
Redis client (`jobpulse.worker.redis_pool.worker_redis`: its pool and retries): `--calls` updates of one
job as
fast as the loop goes with the default 100 ms coalescing window; then `--uncoalesced` updates with
coalescing off (every update published), from one job and from `--jobs` jobs reporting at once, each
with the worker's store (progress writes made while another is on its way go together as one pipeline)
and without batching. Prints wall and CPU time per call, the events written, and the append-script calls per
published update (from `INFO commandstats`), which must be one: the script does the stream, the state
and the announcement in one call, and a batch is one round trip for several of them.
"""

import argparse
import asyncio
import time

from redis.asyncio import Redis

from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.progress import REPORTER_KEY, ProgressReporter, progress
from jobpulse.worker.redis_pool import worker_redis


async def script_calls(redis: Redis) -> int:
    """Calls of the append script so far: the reporter's only command, one round trip each.

    (`total_commands_processed` would also count the commands the script runs inside Redis.)
    """
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def run(redis: Redis, settings: Settings, calls: int, interval_s: float, jobs: int, batch: bool) -> str:
    """`calls` updates in all, spread over `jobs` jobs that report at the same time, as a worker's do."""
    store = JobStore(redis, settings, batch_progress=batch)
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
    before_calls = await script_calls(redis)
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(report(reporter) for reporter in reporters))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls_made = await script_calls(redis) - before_calls
    events = await events_written(store, job_ids) - before_events
    made = jobs * (steps - 1)
    per_update = calls_made / events if events else float("nan")
    return (
        f"{interval_s * 1000:>8.0f} ms {jobs:>5d} {'yes' if batch else 'no':>7} {made:>10d} "
        f"{1e6 * wall / made:>9.2f} {1e6 * cpu / made:>9.2f} {events:>8d} {per_update:>14.2f}"
    )


async def events_written(store: JobStore, job_ids: list[str]) -> int:
    total = 0
    for job_id in job_ids:
        state = await store.get(job_id)
        assert state is not None
        total += state.last_event_id
    return total


HEADER = (
    f"{'window':>11} {'jobs':>5} {'batched':>7} {'calls':>10} {'µs wall':>9} {'µs CPU':>9} "
    f"{'events':>8} {'trips/update':>14}"
)


async def main(args: argparse.Namespace) -> None:
    with RedisServer() as server:
        settings = Settings(redis_url=server.url)
        redis = worker_redis(settings)
        try:
            rows = [HEADER, await run(redis, settings, args.calls, 0.1, 1, batch=True)]
            for batch in (False, True):
                rows.append(await run(redis, settings, args.uncoalesced, 0.0, 1, batch))
            for batch in (False, True):
                rows.append(await run(redis, settings, args.uncoalesced, 0.0, args.jobs, batch))
        finally:
            await redis.aclose()
    print("\n".join(rows))  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000, help="coalesced calls (100 ms window)")
    parser.add_argument("--uncoalesced", type=int, default=20_000, help="calls with coalescing off")
    parser.add_argument("--jobs", type=int, default=50, help="jobs reporting at once, for the last two rows")
    asyncio.run(main(parser.parse_args()))
