"""Run many jobs through the store for a while and watch Redis memory: it must level off, not grow.

    .venv/bin/python -m benchmarks.retention_soak --seconds 60

Starts a private redis-server, then keeps creating jobs that each publish `--events` progress events and
succeed, with a short retention and history length, and prints Redis's memory and key count once a
second. Finished jobs expire after `--retention` seconds and histories are trimmed to `--maxlen`, so
both figures should plateau within a few retention periods.
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


async def one_job(store: JobStore, events: int) -> None:
    job_id = new_job_id()
    await store.create(job_id, "simulate", {"steps": events})
    await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    for step in range(1, events + 1):
        await store.set_progress(job_id, attempt=1, progress=100 * step / events, current=step, total=events)
    await store.set_status(job_id, JobStatus.SUCCEEDED, attempt=1, result={"steps": events})


async def soak(url: str, args: argparse.Namespace) -> list[str]:
    settings = Settings(redis_url=url, stream_maxlen=args.maxlen, retention_s=args.retention)
    redis = Redis.from_url(url)
    store = JobStore(redis, settings)
    rows = [f"{'t (s)':>6} {'jobs done':>10} {'keys':>8} {'used_memory':>12}"]
    done = 0
    started = time.monotonic()
    next_sample = started
    try:
        while (now := time.monotonic()) - started < args.seconds:
            await asyncio.gather(*(one_job(store, args.events) for _ in range(args.concurrency)))
            done += args.concurrency
            if now >= next_sample:
                memory = (await redis.info("memory"))["used_memory"]
                rows.append(
                    f"{now - started:6.0f} {done:10d} {await redis.dbsize():8d} {memory / 2**20:9.1f} MiB"
                )
                next_sample += 1
    finally:
        await redis.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--events", type=int, default=200, help="progress events per job")
    parser.add_argument("--maxlen", type=int, default=100, help="JOBPULSE_STREAM_MAXLEN")
    parser.add_argument("--retention", type=int, default=3, help="JOBPULSE_RETENTION_S")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs run at once")
    args = parser.parse_args()
    with RedisServer() as server:
        rows = asyncio.run(soak(server.url, args))
    print("\n".join(rows))  # noqa: T201


if __name__ == "__main__":
    main()
