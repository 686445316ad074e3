"""What `WAIT 1 <timeout>` after a job's terminal event would cost on a Redis Cluster (issue 19).

    .venv/bin/python -m benchmarks.terminal_wait --jobs 300

Starts a private 3-shard Redis Cluster (3 primaries + 3 replicas, `benchmarks.redis_deployment`) and a
queue node, creates `--jobs` jobs (random ids: spread over the shards) and moves each to `running`. Then
ends each job with its terminal status, `succeeded`, through a `JobStore` on a plain one-connection
client to the job's shard primary (`key_slot` of its keys says which), as three variants, taken in turn
job by job so that the machine's drift falls on all alike:

- *append*: the terminal append alone, what the worker does today;
- *append + WAIT*: the same, then `WAIT 1 <--timeout-ms>` on the same connection: Redis answers once one
  replica has acknowledged every write this connection made, so the event is on two nodes when the
  worker goes on (unless the timeout passes first: counted);
- *append + WAIT elsewhere*: `WAIT` on another connection to the same primary, which has written
  nothing itself: Redis answers at once. `WAIT` covers only its own connection's writes, so it has to go
  on the connection the append went on; this row shows the cost of getting that wrong (none: it
  protects nothing).

Prints, per variant, the wall time per terminal write (p50, p90, p99, mean) and the client's CPU per
write, and for WAIT how many answers had one replica and how many timed out. Wall time is what a job's
end waits for; it is once per job, against one progress write per update.
"""

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from benchmarks.redis_deployment import RedisDeployment, RedisNode, redis_deployment
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore

VARIANTS = ("append", "append + WAIT", "append + WAIT elsewhere")


@dataclass
class Timings:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    acked: int = 0  # WAIT answered 1 (or more): a replica has the write
    timed_out: int = 0  # WAIT answered 0 at its timeout


class ShardClients:
    """Per shard primary: a store on a one-connection client (its writes and its WAITs share the
    connection), and one more connection for the WAIT elsewhere."""

    def __init__(self, deployment: RedisDeployment, settings: Settings, queue: Redis) -> None:
        self._deployment = deployment
        self._clients: dict[int, tuple[Redis, Redis, JobStore]] = {}
        self._settings = settings
        self._queue = queue

    def of(self, job_id: str) -> tuple[Redis, Redis, JobStore]:
        node: RedisNode = self._deployment.shard_of(job_id)
        if node.port not in self._clients:
            own = Redis(port=node.port, single_connection_client=True)
            other = Redis(port=node.port, single_connection_client=True)
            store = JobStore(own, self._settings, queue_redis=self._queue)
            self._clients[node.port] = (own, other, store)
        return self._clients[node.port]

    async def close(self) -> None:
        for own, other, _ in self._clients.values():
            await own.aclose()
            await other.aclose()


async def end(job_id: str, variant: str, clients: ShardClients, timeout_ms: int, timings: Timings) -> None:
    own, other, store = clients.of(job_id)
    wall, cpu = time.perf_counter(), time.process_time()
    await store.set_status(job_id, JobStatus.SUCCEEDED, attempt=1, result={"ok": True})
    if variant != "append":
        connection = own if variant == "append + WAIT" else other
        acked = int(await connection.execute_command("WAIT", 1, timeout_ms))  # type: ignore[no-untyped-call]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    timings.wall_s.append(wall)
    timings.cpu_s.append(cpu)
    if variant != "append":
        if acked >= 1:
            timings.acked += 1
        else:
            timings.timed_out += 1


def _us(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1e6 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    with redis_deployment("cluster") as deployment:
        settings = deployment.settings()
        queue = Redis.from_url(deployment.queue_url)
        clients = ShardClients(deployment, settings, queue)
        try:
            job_ids = [new_job_id() for _ in range(args.jobs * len(VARIANTS))]
            for job_id in job_ids:  # through each shard's store: the same writes the worker makes
                store = clients.of(job_id)[2]
                await store.create(job_id, "simulate", {})
                await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
            timings = {variant: Timings() for variant in VARIANTS}
            for n, job_id in enumerate(job_ids):
                variant = VARIANTS[n % len(VARIANTS)]
                await end(job_id, variant, clients, args.timeout_ms, timings[variant])
        finally:
            await clients.close()
            await queue.aclose()
        per_shard = deployment.jobs_per_shard(job_ids)
    say(
        f"{len(job_ids)} jobs ended ({'/'.join(map(str, per_shard.values()))} on shards 1-3), "
        f"{args.jobs} per variant, WAIT 1 {args.timeout_ms}"
    )
    say(
        f"{'':<24} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'mean µs':>8} {'CPU µs':>8} "
        f"{'acked':>6} {'timed out':>9}"
    )
    for variant, t in timings.items():
        waits = variant != "append"
        say(
            f"{variant:<24} {_us(t.wall_s, 50):>8.0f} {_us(t.wall_s, 90):>8.0f} {_us(t.wall_s, 99):>8.0f} "
            f"{1e6 * statistics.fmean(t.wall_s):>8.0f} {1e6 * statistics.fmean(t.cpu_s):>8.0f} "
            f"{t.acked if waits else '-':>6} {t.timed_out if waits else '-':>9}"
        )
    base = statistics.fmean(timings["append"].wall_s)
    added = statistics.fmean(timings["append + WAIT"].wall_s) - base
    say(f"WAIT adds {1e6 * added:.0f} µs of wall time per terminal write (mean): +{added / base:.0%}")


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300, help="terminal writes per variant")
    parser.add_argument("--timeout-ms", type=int, default=100, help="WAIT's timeout")
    asyncio.run(main(parser.parse_args()))
