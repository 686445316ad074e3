"""The naive design's worker side: per update of each job, HSET the state, then PUBLISH the JSON.

    .venv/bin/python -m benchmarks.fanout.naive_publisher --redis URL --steps 100 --interval-ms 10 JOB...

Same pacing as jobpulse's `simulate` task (`start_delay_ms`, then `steps` updates `interval_ms` apart,
then `succeeded`), and the same `data:` shape (`job_id`, `ts` taken just before the write, `progress`,
`message`, `current`, `total`), plus `seq` for the SSE id and `type` for the SSE event name.
"""

import argparse
import asyncio
import json
import time

from redis.asyncio import Redis

from benchmarks.fanout.naive_app import channel, state_key


async def run_job(redis: Redis, job_id: str, steps: int, interval_s: float, start_delay_s: float) -> None:
    await asyncio.sleep(start_delay_s)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step in range(1, steps + 1):
        if step > 1:  # on a timetable, as the `simulate` task does
            await asyncio.sleep(max(0.0, started + (step - 1) * interval_s - loop.time()))
        progress = 100 * step / steps
        message = f"step {step}/{steps}"
        update = {
            "type": "progress",
            "seq": step,
            "job_id": job_id,
            "ts": time.time(),
            "progress": progress,
            "message": message,
            "current": step,
            "total": steps,
        }
        mapping = {"status": "running", "progress": progress, "message": message, "current": step}
        await redis.hset(state_key(job_id), mapping=mapping)  # type: ignore[misc]
        await redis.publish(channel(job_id), json.dumps(update))
    final = {"type": "status", "seq": steps + 1, "job_id": job_id, "ts": time.time(), "status": "succeeded"}
    await redis.hset(state_key(job_id), mapping={"status": "succeeded", "progress": 100})  # type: ignore[misc]
    await redis.publish(channel(job_id), json.dumps(final))


async def main_async(args: argparse.Namespace) -> None:
    redis = Redis.from_url(args.redis)
    try:
        await asyncio.gather(
            *(
                run_job(redis, job_id, args.steps, args.interval_ms / 1000, args.start_delay_ms / 1000)
                for job_id in args.jobs
            )
        )
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--interval-ms", type=int, default=10)
    parser.add_argument("--start-delay-ms", type=int, default=0)
    parser.add_argument("jobs", nargs="+")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
