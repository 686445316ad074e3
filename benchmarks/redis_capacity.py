"""How many published progress updates a second one Redis node takes, and a 3-shard Redis Cluster.

    .venv/bin/python -m benchmarks.redis_capacity --redis both --driver both

Starts a private Redis (`--redis`: one node; one node with a replica; a 3-shard Redis Cluster, 3
primaries + 3 replicas, with the queue on a node of its own; several in turn, `benchmarks.
redis_deployment`), then drives it with
publisher processes, more at each step (`--procs`, e.g. 1,2,3), each with `--jobs` jobs of its own
(random ids: spread over the shards), created and moved to `running` through the store the worker
builds (`benchmarks.progress_calls.worker_store`: the worker's Redis clients). Each job then publishes
uncoalesced progress updates, one event each, as fast as it can for `--seconds`, with `--driver`:

- *store*: `JobStore.set_progress` with the worker's progress batching, the worker's write path with
  nothing else in it: what many jobs reporting at once cost Redis, and the worker.
- *lean*: the same script calls at a fraction of the client's CPU, so that Redis, not the publishers,
  is what runs out on a small box. Each publisher records, through a real `JobStore`, one progress write
  per job (the append script's sha, keys and arguments), then replays it as fast as it can, a fresh
  write id each time, in pipelines of one call per job to each shard primary (packed once, sent on a
  raw socket, replies read with hiredis and checked). Redis does the same work per update as for the
  store, in batches as deep as the job count.

`--subscribers` processes (1 by default) watch every job as a web process's hub does: subscribed to
each job's live channel on its shard primary, reading every announcement, so that Redis pays for
delivering them too. Per step it prints the updates published per second, the publishers' CPU per
update, and each server's CPU (`INFO cpu`, `used_cpu_sys + used_cpu_user`, over the step) as cores
busy and as µs per update on that node (a shard's updates are those of its jobs). Redis runs commands
on one core: a node's capacity is 1 core / its µs per update (the last column); a node near 1 core busy
is measured there, not extrapolated. The ramp stops early once a node is at `--stop-at-cores`.
"""

import argparse
import asyncio
import multiprocessing
import re
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import hiredis
from redis.commands.core import AsyncScript

from benchmarks.progress_calls import worker_store
from benchmarks.redis_deployment import KINDS, RedisDeployment, redis_deployment
from jobpulse import keys
from jobpulse.ids import new_job_id
from jobpulse.settings import Settings
from jobpulse.status import JobStatus
from jobpulse.store import JobStore
from jobpulse.worker.redis_pool import worker_redis

DRIVERS = ("store", "lean")
# How `JobStore` names a write (its random name and a count): the one argument the lean driver renews.
_WRITE_ID = re.compile(rb"^[0-9a-f]{16}-[0-9]+$")

Recorded = tuple[str, str, int, list[bytes]]  # job id, script sha, number of keys, keys and arguments


def publisher_main(driver: str, deployment: RedisDeployment, job_ids: list[str], conn: Connection) -> None:
    settings = deployment.settings()
    if driver == "store":
        asyncio.run(_publish(settings, job_ids, conn))
    else:
        _publish_lean(deployment, asyncio.run(_record(settings, job_ids)), conn)


async def _started_jobs(store: JobStore, job_ids: list[str]) -> list[str]:
    for job_id in job_ids:
        await store.create(job_id, "simulate", {})
        await store.set_status(job_id, JobStatus.RUNNING, attempt=1)
    return job_ids


async def _publish(settings: Settings, job_ids: list[str], conn: Connection) -> None:
    queue_redis = worker_redis(settings)
    store, store_redis = worker_store(settings, queue_redis, batch=True)
    await _started_jobs(store, job_ids)
    conn.send("ready")
    seconds = float(conn.recv())  # the go
    counts = dict.fromkeys(job_ids, 0)

    async def report(job_id: str, stop_at: float) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            await store.set_progress(job_id, attempt=1, progress=n % 100, message="working", current=n)
        counts[job_id] = n

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(report(job_id, wall + seconds) for job_id in job_ids))
    conn.send((counts, time.process_time() - cpu))
    if store_redis is not queue_redis:
        await store_redis.aclose()
    await queue_redis.aclose()


class _Recorder:
    """A store's Redis that notes each script call (sha, keys and arguments) on its way through."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self.calls: list[tuple[str, int, list[bytes]]] = []

    def register_script(self, script: str) -> AsyncScript:
        return AsyncScript(self, script)  # type: ignore[arg-type]

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        encoded = [a if isinstance(a, bytes) else str(a).encode() for a in keys_and_args]
        self.calls.append((sha, numkeys, encoded))
        return await self._redis.evalsha(sha, numkeys, *keys_and_args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)


async def _record(settings: Settings, job_ids: list[str]) -> list[Recorded]:
    """Per job: the append script's call of one progress write, as `JobStore` makes it."""
    queue_redis = worker_redis(settings)
    store, store_redis = worker_store(settings, queue_redis, batch=False)
    recorder = _Recorder(store_redis)
    recording = JobStore(recorder, settings, queue_redis=queue_redis)  # type: ignore[arg-type]
    calls = []
    for job_id in await _started_jobs(store, job_ids):
        recorder.calls.clear()
        await recording.set_progress(job_id, attempt=1, progress=50, message="working", current=1)
        ((sha, numkeys, keys_and_args),) = recorder.calls
        calls.append((job_id, sha, numkeys, keys_and_args))
    if store_redis is not queue_redis:
        await store_redis.aclose()
    await queue_redis.aclose()
    return calls


def _bulk(args: list[bytes]) -> bytes:
    """Arguments of a command in RESP, as a client sends them."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _publish_lean(deployment: RedisDeployment, calls: list[Recorded], conn: Connection) -> None:
    """Each round: every job's recorded call again, with a write id of its own, one pipeline per shard
    primary on a raw socket (packed once per job: only the write id changes), the replies read with
    hiredis and checked (an event id each)."""
    me = new_job_id().encode()  # this publisher's own name, for its write ids
    width = len(me) + 11  # `<name>-<round, 10 digits>`
    by_port: dict[int, list[tuple[bytes, bytes]]] = {}
    for job_id, sha, numkeys, keys_and_args in calls:
        (w,) = (i for i, a in enumerate(keys_and_args) if _WRITE_ID.match(a))
        before = [b"EVALSHA", sha.encode(), str(numkeys).encode(), *keys_and_args[:w]]
        head = b"*%d\r\n" % (3 + len(keys_and_args)) + _bulk(before) + b"$%d\r\n" % width
        tail = b"\r\n" + _bulk(keys_and_args[w + 1 :])
        by_port.setdefault(deployment.shard_of(job_id).port, []).append((head, tail))
    sockets = {port: socket.create_connection(("127.0.0.1", port)) for port in by_port}
    conn.send("ready")
    seconds = float(conn.recv())
    cpu, stop_at, n = time.process_time(), time.monotonic() + seconds, 0
    while time.monotonic() < stop_at:
        n += 1
        write_id = b"%s-%010d" % (me, n)
        for port, job_calls in by_port.items():
            sockets[port].sendall(b"".join(head + write_id + tail for head, tail in job_calls))
        for port, job_calls in by_port.items():
            _read_event_ids(sockets[port], len(job_calls))
    conn.send(({job_id: n for job_id, *_ in calls}, time.process_time() - cpu))
    for sock in sockets.values():
        sock.close()


def _read_event_ids(sock: socket.socket, count: int) -> None:
    reader = hiredis.Reader()
    while count:
        reply = reader.gets()
        if reply is False:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("Redis closed the connection")
            reader.feed(chunk)
            continue
        if not (isinstance(reply, int) and reply > 0):
            raise RuntimeError(f"the append script answered {reply!r}")
        count -= 1


def subscriber_main(deployment: RedisDeployment, job_ids: list[str], conn: Connection) -> None:
    """A web process watching every job: subscribed to each job's live channel on its shard primary
    (`SSUBSCRIBE` on a cluster, `SUBSCRIBE` on one node, as the hub does), reading every announcement
    until told to stop; then reports how many it read."""
    command = b"SSUBSCRIBE" if deployment.kind == "cluster" else b"SUBSCRIBE"
    by_port: dict[int, list[bytes]] = {}
    for job_id in job_ids:
        by_port.setdefault(deployment.shard_of(job_id).port, []).append(keys.live_channel(job_id).encode())
    sockets, readers = {}, {}
    for port, channels in by_port.items():
        sock = sockets[port] = socket.create_connection(("127.0.0.1", port))
        # One channel a command: a cluster refuses channels of several slots in one SSUBSCRIBE.
        sock.sendall(b"".join(b"*2\r\n" + _bulk([command, channel]) for channel in channels))
        readers[port] = hiredis.Reader()
    confirmed = _read(sockets, readers, lambda port: len(by_port[port]))
    conn.send(("ready", confirmed))
    messages = 0
    with selectors.DefaultSelector() as selector:
        for port, sock in sockets.items():
            selector.register(sock, selectors.EVENT_READ, port)
        while not conn.poll():
            for key, _ in selector.select(0.05):
                port = key.data
                chunk = sockets[port].recv(1 << 20)
                readers[port].feed(chunk)
                while readers[port].gets() is not False:
                    messages += 1
    conn.recv()
    conn.send(messages)
    for sock in sockets.values():
        sock.close()


def _read(sockets: dict[int, socket.socket], readers: dict[int, Any], count: Callable[[int], int]) -> int:
    """Read `count(port)` replies from each socket: the subscriptions' confirmations."""
    total = 0
    for port, sock in sockets.items():
        left = count(port)
        while left:
            if readers[port].gets() is False:
                readers[port].feed(sock.recv(1 << 16))
                continue
            left -= 1
            total += 1
    return total


@dataclass
class Step:
    kind: str
    driver: str
    procs: int
    jobs: int
    updates: int
    wall_s: float
    publisher_cpu_s: float
    node_cpu_s: dict[str, float]  # by role, over the step
    node_updates: dict[str, int]  # updates written on each store node (a shard's: its jobs')
    subscribers: int = 0
    announcements: int = 0  # read by the subscribers, all together

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.wall_s

    def cores(self, role: str) -> float:
        return self.node_cpu_s[role] / self.wall_s

    def us_per_update(self, role: str) -> float:
        return 1e6 * self.node_cpu_s[role] / self.node_updates[role]


def run_step(
    deployment: RedisDeployment, driver: str, procs: int, jobs: int, seconds: float, subscribers: int
) -> Step:
    ctx = multiprocessing.get_context("spawn")
    conns, processes, watching = [], [], []
    job_ids = [[new_job_id() for _ in range(jobs)] for _ in range(procs)]
    everyone = [job_id for ids in job_ids for job_id in ids]

    def start(target: Callable[..., None], *args: Any) -> Connection:
        parent, child = ctx.Pipe()
        process = ctx.Process(target=target, args=(*args, child), daemon=True)
        process.start()
        child.close()
        processes.append(process)
        return parent

    try:
        watching = [start(subscriber_main, deployment, everyone) for _ in range(subscribers)]
        for conn in watching:
            if not conn.poll(120) or conn.recv()[0] != "ready":
                raise RuntimeError("a subscriber did not start")
        conns = [start(publisher_main, driver, deployment, ids) for ids in job_ids]
        for conn in conns:
            if not conn.poll(120) or conn.recv() != "ready":
                raise RuntimeError("a publisher did not start")
        cpu0 = {node.role: node.info_cpu_seconds() for node in deployment.nodes}
        started = time.monotonic()
        counts, publisher_cpu = _go(conns, seconds)
        wall = time.monotonic() - started
        node_cpu = {node.role: node.info_cpu_seconds() - cpu0[node.role] for node in deployment.nodes}
        time.sleep(0.5)  # the last announcements on their way
        for conn in watching:
            conn.send("stop")
        announcements = sum(int(conn.recv()) for conn in watching if conn.poll(30))
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join()
    node_updates: dict[str, int] = {}
    for job_id, n in counts.items():
        role = deployment.shard_of(job_id).role
        node_updates[role] = node_updates.get(role, 0) + n
    step = Step(deployment.kind, driver, procs, procs * jobs, 0, wall, publisher_cpu, node_cpu, node_updates)
    step.updates = sum(counts.values())
    step.subscribers, step.announcements = subscribers, announcements
    return step


def _go(publishers: list[Connection], seconds: float) -> tuple[dict[str, int], float]:
    """Start the publishers; once they are done, the updates of each job, and their CPU seconds."""
    for conn in publishers:
        conn.send(seconds)
    counts: dict[str, int] = {}
    publisher_cpu = 0.0
    for conn in publishers:
        if not conn.poll(seconds + 60):
            raise RuntimeError("a publisher did not report")
        job_counts, cpu = conn.recv()
        counts |= job_counts
        publisher_cpu += cpu
    return counts, publisher_cpu


HEADER = (
    f"{'redis':>8} {'driver':>6} {'procs':>5} {'jobs':>5} {'updates/s':>10} {'pub µs/upd':>10}  "
    f"{'node':<10} {'cores':>5} {'upd/s here':>10} {'µs/upd':>7} {'1 core =':>11}"
)


def rows(step: Step, deployment: RedisDeployment) -> list[str]:
    label = {"node": "one node", "replicated": "node+rep", "cluster": "cluster"}[step.kind]
    first = (
        f"{label:>8} {step.driver:>6} {step.procs:>5} {step.jobs:>5} {step.updates_per_s:>10,.0f} "
        f"{1e6 * step.publisher_cpu_s / step.updates:>10.1f}  "
    )
    lines = []
    for n, node in enumerate(deployment.nodes):
        role, here = node.role, step.node_updates.get(node.role)
        per_s = f"{here / step.wall_s:,.0f}" if here else "-"
        us = f"{step.us_per_update(role):.1f}" if here else "-"
        capacity = f"{1e6 / step.us_per_update(role):,.0f}/s" if here else "-"
        lead = first if n == 0 else " " * len(first)
        lines.append(f"{lead}{role:<10} {step.cores(role):>5.2f} {per_s:>10} {us:>7} {capacity:>11}")
    if step.subscribers:
        # Their jobs' first two events (queued, running) and, for the lean driver, the recorded write.
        setup = step.jobs * (3 if step.driver == "lean" else 2)
        expected = (step.updates + setup) * step.subscribers
        lines.append(
            f"{'':>8} {step.subscribers} subscriber(s) watching every job read {step.announcements:,} "
            f"announcements of {expected:,}"
        )
    return lines


def main(args: argparse.Namespace) -> None:
    say(HEADER)
    drivers = DRIVERS if args.driver == "both" else [args.driver]
    for kind in KINDS if args.redis == "both" else args.redis.split(","):
        with redis_deployment(kind) as deployment:
            for driver in drivers:
                for procs in args.procs:
                    step = run_step(deployment, driver, procs, args.jobs, args.seconds, args.subscribers)
                    for line in rows(step, deployment):
                        say(line)
                    busiest = max(step.cores(shard.role) for shard in deployment.shards)
                    if busiest >= args.stop_at_cores:
                        say(f"{'':>8} a node is {busiest:.2f} cores busy: the ramp stops")
                        break


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--redis",
        default="both",
        help="node, replicated (a node and its replica), cluster, comma-separated, or both (node,cluster)",
    )
    parser.add_argument("--driver", choices=[*DRIVERS, "both"], default="both", help="see above")
    parser.add_argument(
        "--procs",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 3],
        help="publisher processes at each step (comma-separated)",
    )
    parser.add_argument("--jobs", type=int, default=50, help="jobs per publisher, all reporting at once")
    parser.add_argument("--seconds", type=float, default=6.0, help="per step")
    parser.add_argument(
        "--subscribers", type=int, default=1, help="processes subscribed to every job's live channel"
    )
    parser.add_argument("--stop-at-cores", type=float, default=0.95, help="a node this busy ends the ramp")
    main(parser.parse_args())
