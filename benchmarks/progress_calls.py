"""What `progress()` costs a task: per call in a hot loop (coalesced), and per published update.

    .venv/bin/python -m benchmarks.progress_calls --calls 1000000 --uncoalesced 20000

Starts a private redis-server and drives one job's `ProgressReporter` the way a task does, through the
worker's own Redis client (`worker.redis_pool.worker_redis`: its pool and retries), twice:
`--calls` updates as fast as the loop goes with the default 100 ms coalescing window, then
`--uncoalesced` updates with coalescing off (every update published). Prints wall and CPU time per
call, the events written, and the Redis round trips per published update (append-script calls, from
`INFO commandstats`), which must be one: the script does the stream, the state and the announcement.
"""

import argparse
import asyncio
import time

from redis.asyncio import Redis

from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from stack.redis_server import RedisServer
from worker.progress import REPORTER_KEY, ProgressReporter, progress
from worker.redis_pool import worker_redis


async def script_calls(redis: Redis) -> int:
    """Calls of the append script so far: the reporter's only command, one round trip each.

    (`total_commands_processed` would also count the commands the script runs inside Redis.)
    """
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def run(redis: Redis, settings: Settings, calls: int, interval_s: float) -> str:
    store = JobStore(redis, settings)
    job_id = new_job_id()
    await store.create(job_id, "simulate", {})
    await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    reporter = ProgressReporter(store, job_id, 1, interval_s)
    ctx = {REPORTER_KEY: reporter}
    before_events = (await store.get(job_id)).last_event_id  # type: ignore[union-attr]
    before_calls = await script_calls(redis)
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(1, calls):  # the last step, 100 %, is always published: leave it out
        await progress(ctx, current=step, total=calls, message="working")
    await reporter.flush()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls_made = await script_calls(redis) - before_calls
    state = await store.get(job_id)
    assert state is not None
    events = state.last_event_id - before_events
    per_update = calls_made / events if events else float("nan")
    return (
        f"{interval_s * 1000:>8.0f} ms {calls - 1:>10d} {1e6 * wall / (calls - 1):>9.2f} "
        f"{1e6 * cpu / (calls - 1):>9.2f} {events:>8d} {per_update:>14.2f}"
    )


HEADER = f"{'window':>11} {'calls':>10} {'µs wall':>9} {'µs CPU':>9} {'events':>8} {'trips/update':>14}"


async def main(args: argparse.Namespace) -> None:
    with RedisServer() as server:
        settings = Settings(redis_url=server.url)
        redis = worker_redis(settings)
        try:
            rows = [HEADER, await run(redis, settings, args.calls, 0.1)]
            rows.append(await run(redis, settings, args.uncoalesced, 0.0))
        finally:
            await redis.aclose()
    print("\n".join(rows))  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000, help="coalesced calls (100 ms window)")
    parser.add_argument("--uncoalesced", type=int, default=20_000, help="calls with coalescing off")
    asyncio.run(main(parser.parse_args()))
