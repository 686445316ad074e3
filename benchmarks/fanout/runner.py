"""Start a system under test (jobpulse, the naive design, a ceiling app), drive it, measure it."""

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal

import httpx

from benchmarks.fanout.loadgen import GenResult, GenSpec, generator_main
from benchmarks.fanout.procs import (
    Child,
    memory_kib,
    pin,
    python_module,
    uvicorn_args,
    wait_for_http,
)
from benchmarks.redis_deployment import Kind, RedisDeployment, redis_deployment
from jobpulse.stack.redis_server import free_port

# How the web process and the worker name their Redis connections (`CLIENT SETNAME`), counted per node.
WEB_CLIENT = "jobpulse-web"
WORKER_CLIENT = "jobpulse-worker"

# The web apps that serve jobpulse: the reference service, and a user's own app that includes the router
# at `/api` (`embedded_app.py`), with its middleware not marked and marked head-only. Same worker for all.
JOBPULSE_APPS: dict[str, tuple[str, str]] = {  # system: (uvicorn app, prefix of the job routes)
    "jobpulse": ("web.app:app", ""),
    "embedded": ("benchmarks.fanout.embedded_app:app", "/api"),
    "embedded-marked": ("benchmarks.fanout.embedded_app:marked_app", "/api"),
}


@dataclass
class Stack:
    port: int
    web: Child
    prefix: str = ""  # where the job routes are: `{prefix}/jobs`
    redis: RedisDeployment | None = None
    worker: Child | None = None  # arq worker, or the naive publisher once started
    children: list[Child] = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.store_url


@dataclass
class Run:
    scenario: str
    system: str
    jobs: int
    watchers: int  # per job (fan-out, hot) or in all (idle, ceiling)
    streams: int
    offered_per_s: float | None
    updates: int  # events published, all jobs together
    gen: GenResult
    gen_procs: int
    window_s: float  # from all watchers connected to all streams done (or closed)
    web_cpu_s: float
    worker_cpu_s: float | None
    redis_cpu_s: float | None
    web_rss_base_kib: int
    web_rss_ready_kib: int
    web_rss_peak_kib: int
    redis_clients_base: int | None
    redis_clients_ready: int | None
    redis_clients_end: int | None
    redis_clients_peak: int | None
    connected_before_first_update: bool | None
    log_problems: list[str]
    # Which Redis (`benchmarks.redis_deployment`): "node", "cluster", or None (no Redis: floor, ceiling).
    redis_kind: str | None = None
    redis_cpu_by_node: dict[str, float] = field(default_factory=dict)  # over the window, every server
    # The web process's and the worker's connections on each primary (shards, queue) with all streams
    # open, and the web's peak per node over the run's samples.
    web_conns_ready: dict[str, int] = field(default_factory=dict)
    web_conns_peak: dict[str, int] = field(default_factory=dict)
    worker_conns_ready: dict[str, int] = field(default_factory=dict)
    jobs_per_shard: dict[str, int] = field(default_factory=dict)


def merge(results: list[GenResult]) -> GenResult:
    total = GenResult()
    for r in results:
        for name in (
            "watchers",
            "connected",
            "stalled",
            "events",
            "expected",
            "lost",
            "duplicated",
            "out_of_order",
        ):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        for name in ("incomplete", "dropped", "errors"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.error_samples += r.error_samples[: 10 - len(total.error_samples)]
        total.arrival_latencies.extend(r.arrival_latencies)
        total.exact_arrival_latencies.extend(r.exact_arrival_latencies)
        total.latencies.extend(r.latencies)
        total.parsed_latencies.extend(r.parsed_latencies)
        total.first_event_at = min(total.first_event_at, r.first_event_at)
        total.last_event_at = max(total.last_event_at, r.last_event_at)
        total.min_ts = min(total.min_ts, r.min_ts)
        total.connect_started_at = min(total.connect_started_at or r.connect_started_at, r.connect_started_at)
        total.connected_at = max(total.connected_at, r.connected_at)
        total.cpu_s += r.cpu_s
        total.delivery_busy = max(total.delivery_busy, r.delivery_busy)
        total.wall_s = max(total.wall_s, r.wall_s)
    return total


class Generators:
    """`procs` generator processes sharing `paths` round-robin."""

    def __init__(
        self,
        port: int,
        paths: list[str],
        *,
        mode: Literal["sse", "count"],
        until: Literal["end", "close"],
        procs: int,
        connect_concurrency: int,
        timeout_s: float,
        stalled_paths: list[str] | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        stalled = stalled_paths or []
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        procs = max(1, min(procs, len(paths)))
        per_proc_concurrency = max(1, connect_concurrency // procs)
        for i in range(procs):
            spec = GenSpec(
                "127.0.0.1",
                port,
                paths[i::procs],
                mode,
                until,
                per_proc_concurrency,
                timeout_s,
                stalled[i::procs],
            )
            parent, child = ctx.Pipe()
            process = ctx.Process(target=generator_main, args=(spec, child), daemon=True)
            process.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(process)
        self.count = procs

    def wait_ready(self, timeout_s: float) -> tuple[int, int]:
        connected = errors = 0
        for conn in self._conns:
            if not conn.poll(timeout_s):
                raise RuntimeError("a generator did not finish connecting in time")
            _, ok, bad = conn.recv()
            connected += ok
            errors += bad
        return connected, errors

    def close_streams(self) -> None:
        for conn in self._conns:
            conn.send("close")

    def results(self, timeout_s: float) -> GenResult:
        results: list[GenResult] = []
        for conn in self._conns:
            if not conn.poll(timeout_s):
                raise RuntimeError("a generator did not report in time")
            _, result = conn.recv()
            results.append(result)
        return merge(results)

    def stop(self) -> None:
        for process in self._procs:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join()
        for conn in self._conns:
            conn.close()


@contextmanager
def _log_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jobpulse-fanout-"))
    try:
        yield path
    finally:
        if os.environ.get("FANOUT_KEEP_LOGS"):
            print(f"logs kept in {path}")  # noqa: T201
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _serving(stack: Stack) -> Iterator[None]:
    """Stop every child of `stack` on the way out, however the run ends."""
    try:
        yield
    finally:
        for child in stack.children:
            child.stop()


@contextmanager
def jobpulse_stack(
    *, max_jobs: int, with_worker: bool, system: str = "jobpulse", redis_kind: Kind = "node"
) -> Iterator[Stack]:
    """A private Redis (one node, or a cluster and a queue node: `redis_kind`), the web app of `system` (a
    key of `JOBPULSE_APPS`) and, `with_worker`, a worker."""
    app, prefix = JOBPULSE_APPS[system]
    with _log_dir() as logs, redis_deployment(redis_kind) as redis:
        env = {
            **os.environ,
            **redis.env(),
            "JOBPULSE_SUBMISSIONS_PER_MINUTE": "0",
            "JOBPULSE_MAX_STREAMS_PER_CLIENT": "0",
            "JOBPULSE_PROGRESS_INTERVAL_MS": "0",
            "JOBPULSE_MAX_JOBS": str(max_jobs),
            "JOBPULSE_QUEUE_NAME": f"bench-fanout-{uuid.uuid4().hex[:8]}",
            "JOBPULSE_UPLOAD_DIR": str(logs / "uploads"),
        }
        port = free_port()
        web = Child("web", uvicorn_args(app, port), env, logs)
        stack = Stack(port=port, web=web, prefix=prefix, redis=redis, children=[web])
        with _serving(stack):
            if with_worker:
                stack.worker = Child("worker", python_module("arq", "worker.WorkerSettings"), env, logs)
                stack.children.append(stack.worker)
            wait_for_http(port, web)
            yield stack


@contextmanager
def naive_stack() -> Iterator[Stack]:
    with _log_dir() as logs, redis_deployment("node") as redis:
        env = {**os.environ, **redis.env()}
        port = free_port()
        web = Child("web", uvicorn_args("benchmarks.fanout.naive_app:app", port), env, logs)
        stack = Stack(port=port, web=web, redis=redis, children=[web])
        stack.log_dir = logs
        with _serving(stack):
            wait_for_http(port, web)
            yield stack


@contextmanager
def ceiling_stack(app: str) -> Iterator[Stack]:
    with _log_dir() as logs:
        port = free_port()
        web = Child("web", uvicorn_args(f"benchmarks.fanout.ceiling_app:{app}", port), dict(os.environ), logs)
        stack = Stack(port=port, web=web, children=[web])
        with _serving(stack):
            wait_for_http(port, web)
            yield stack


def submit_simulate_jobs(stack: Stack, count: int, params: dict[str, int]) -> list[str]:
    """Submit `count` simulate jobs; returns the `events_url` of each (its stream, prefix included)."""
    urls: list[str] = []
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        for _ in range(count):
            response = client.post(f"{stack.prefix}/jobs", json={"task": "simulate", "params": params})
            response.raise_for_status()
            urls.append(response.json()["events_url"])
    return urls


def start_naive_publisher(
    stack: Stack, job_ids: list[str], steps: int, interval_ms: int, delay_ms: int
) -> None:
    assert stack.log_dir is not None
    logs = stack.log_dir
    args = ["--redis", stack.redis_url, "--steps", str(steps), "--interval-ms", str(interval_ms)]
    args += ["--start-delay-ms", str(delay_ms), *job_ids]
    env = {**os.environ, "REDIS_URL": stack.redis_url}
    stack.worker = Child("publisher", python_module("benchmarks.fanout.naive_publisher", *args), env, logs)
    stack.children.append(stack.worker)


@dataclass
class Drive:
    """How to drive one run: the streams to open and what to do once they are all open."""

    scenario: str
    system: str
    jobs: int
    watchers: int
    paths: list[str]
    mode: Literal["sse", "count"]
    until: Literal["end", "close"]
    updates: int
    offered_per_s: float | None
    procs: int
    connect_concurrency: int
    timeout_s: float
    on_ready: Callable[[], None] = lambda: None
    hold_s: float = 0.0  # until="close": how long to keep the streams open
    stalled_paths: list[str] = field(default_factory=list)  # watchers that stop reading after the head
    web_cpus: set[int] | None = None  # --pin: the web process's CPU (everything else is kept off it)


class Sampler:
    """Samples Redis's client count, in all and the web's per node, every 0.1 s while a run goes on;
    keeps the peaks."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.redis_clients_peak: int | None = None
        self.web_conns_peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        redis = self._stack.redis
        while redis is not None and not self._stop.wait(0.1):
            try:
                by_node = {node.role: node.clients_by_name() for node in redis.primaries}
            except Exception:  # Redis busy or going away: skip this sample
                continue
            clients = sum(sum(names.values()) for names in by_node.values())
            self.redis_clients_peak = max(self.redis_clients_peak or 0, clients)
            for role, names in by_node.items():
                self.web_conns_peak[role] = max(self.web_conns_peak.get(role, 0), names[WEB_CLIENT])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _job_id(path: str) -> str | None:
    """The job of a stream's path, `{prefix}/jobs/<id>/events`."""
    _, found, tail = path.partition("/jobs/")
    return tail.split("/", 1)[0] if found else None


def drive(stack: Stack, plan: Drive) -> Run:
    def cpu(child: Child | None) -> float:
        return child.cpu() if child is not None else float("nan")

    redis = stack.redis

    def redis_cpu() -> dict[str, float]:
        return redis.cpu_seconds() if redis is not None else {}

    def clients() -> int | None:
        return redis.connected_clients() if redis is not None else None

    if plan.web_cpus is not None:
        pin(stack.web.pid, plan.web_cpus)
    clients_base = clients()
    rss_base = memory_kib(stack.web.pid)
    # Ceiling clients get their events the moment they connect: count the web's CPU from the start.
    web_cpu_start = cpu(stack.web)
    sampler = Sampler(stack)
    generators = Generators(
        stack.port,
        plan.paths,
        mode=plan.mode,
        until=plan.until,
        procs=plan.procs,
        connect_concurrency=plan.connect_concurrency,
        timeout_s=plan.timeout_s,
        stalled_paths=plan.stalled_paths,
    )
    try:
        generators.wait_ready(plan.timeout_s)
        ready_at = time.time()
        web_cpu0 = web_cpu_start if plan.mode == "count" else cpu(stack.web)
        redis_cpu0 = redis_cpu()
        rss_ready = memory_kib(stack.web.pid)
        clients_ready = clients()
        web_conns = redis.clients_named(WEB_CLIENT) if redis is not None else {}
        worker_conns = redis.clients_named(WORKER_CLIENT) if redis is not None else {}
        plan.on_ready()
        worker_cpu0 = cpu(stack.worker)
        if plan.until == "close":
            time.sleep(plan.hold_s)
            generators.close_streams()
        gen = generators.results(plan.timeout_s + 30)
        window = time.time() - ready_at
        web_cpu = cpu(stack.web) - web_cpu0
        worker_cpu = cpu(stack.worker) - worker_cpu0 if stack.worker else None
        redis_cpu_by_node = {role: s - redis_cpu0[role] for role, s in redis_cpu().items()}
    finally:
        generators.stop()
        sampler.stop()
    clients_end = clients()
    job_ids = sorted({job for job in map(_job_id, plan.paths) if job is not None})
    problems = [line for child in stack.children for line in child.log_problems()]
    first_update = gen.min_ts if gen.min_ts != float("inf") else None
    return Run(
        scenario=plan.scenario,
        system=plan.system,
        jobs=plan.jobs,
        watchers=plan.watchers,
        streams=len(plan.paths),
        offered_per_s=plan.offered_per_s,
        updates=plan.updates,
        gen=gen,
        gen_procs=generators.count,
        window_s=window,
        web_cpu_s=web_cpu,
        worker_cpu_s=worker_cpu,
        redis_cpu_s=sum(redis_cpu_by_node.values()) if redis is not None else None,
        web_rss_base_kib=rss_base,
        web_rss_ready_kib=rss_ready,
        web_rss_peak_kib=memory_kib(stack.web.pid, "VmHWM"),
        redis_clients_base=clients_base,
        redis_clients_ready=clients_ready,
        redis_clients_end=clients_end,
        redis_clients_peak=sampler.redis_clients_peak,
        connected_before_first_update=None if first_update is None else gen.connected_at < first_update,
        log_problems=problems,
        redis_kind=redis.kind if redis is not None else None,
        redis_cpu_by_node=redis_cpu_by_node,
        web_conns_ready=web_conns,
        web_conns_peak=sampler.web_conns_peak,
        worker_conns_ready=worker_conns,
        jobs_per_shard=redis.jobs_per_shard(job_ids) if redis is not None and job_ids else {},
    )
