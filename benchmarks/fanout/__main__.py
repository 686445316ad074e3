"""SSE fan-out: jobpulse against the naive design and uvicorn's ceiling, same machine, same run.

    .venv/bin/python -m benchmarks.fanout --scenario all
    .venv/bin/python -m benchmarks.fanout --scenario fanout --jobs 50 --watchers 20
    .venv/bin/python -m benchmarks.fanout --smoke

Scenarios (each starts its own private redis-server, web process and worker/publisher, then stops them):

- ceiling: uvicorn streaming a pre-encoded event as fast as clients read (StreamingResponse; bare ASGI).
  For fanout, fanout-light and hot, the `floor` system is the same paced fan-out done by a bare ASGI
  endpoint with no Redis at all (`ceiling_app.paced_app`): the least any design pays per delivery.
- fanout: `--jobs` simulate jobs x `--watchers` SSE clients each, `--steps` updates `--interval-ms` apart.
- fanout-light: the same at `--light-interval-ms`, so the offered load is about 20k deliveries/s.
- fanout-capacity: the same at `--capacity-interval-ms` for `--capacity-steps`, an offered load above what
  any system here delivers on a 2-core machine: the throughput ratios at capacity. At fanout's 100k/s
  offered, a naive design that delivers a third of it caps the ratio to it below 3.5x, and a ceiling
  above 125k/s caps the ratio to that below 0.8x.
- hot: one job x `--hot-watchers` clients, `--hot-steps` updates `--hot-interval-ms` apart: web CPU per
  published update, latency. 10 updates/s by default, the rate of the issue's naive figures (77 ms of
  CPU per update caps the naive design at 13/s); `--hot-interval-ms 10` is 100/s, 100k deliveries/s,
  where on a 2-core machine the generator needs most of a core and the box is full.
- slow: one job x `--slow-readers` clients, run twice: alone, then with `--slow-stalled` more clients that
  stop reading after the response head: what they cost the web's memory, and whether the readers notice.
- idle: `--idle-watchers` streams held open on one web process over `--idle-jobs` queued jobs.
- embedded: the fanout load and the idle streams, each served by the reference service, by a user's own
  app that includes the router at /api behind an `@app.middleware("http")` function (`embedded_app.py`),
  and by the same app with that function marked head-only: deliveries/s, web CPU per delivery and RSS
  per idle watcher side by side. `--systems embedded,embedded-marked` runs either in the other scenarios.

The load generator is a separate process (`--generators` of them) on raw sockets; its CPU is reported
and flagged SATURATED when it was the bottleneck. Latency is the time the client's kernel received the
event (`SO_TIMESTAMPNS`, `stamped_socket`) minus the `ts` the publisher put in it (all `time.time()`,
same host); the time the generator read it, and parsed it, are printed beside. `--pin` gives the web
process a CPU of its own, as a server's clients never share its cores; on a two-CPU machine everything
else shares the other one. `--smoke` runs tiny sizes of jobpulse only (of fanout, hot and idle, or of the
`--scenario`s given) and exits 1 unless every stream got every event once and in order.
"""

import argparse
import os
import platform
import sys
import time
import uuid

from benchmarks.fanout.ceiling_app import EVENT as CEILING_EVENT
from benchmarks.fanout.procs import raise_nofile, split_cpus
from benchmarks.fanout.report import (
    CEILING_ROWS,
    IDLE_ROWS,
    SLOW_ROWS,
    STREAM_ROWS,
    Figures,
    check,
    correctness_failures,
    cpu_us_per_delivery,
    embedded_rows,
    figures,
    redis_rows,
    table,
)
from benchmarks.fanout.runner import (
    JOBPULSE_APPS,
    Drive,
    Run,
    ceiling_stack,
    drive,
    jobpulse_stack,
    naive_stack,
    start_naive_publisher,
    submit_simulate_jobs,
)
from benchmarks.redis_deployment import KINDS, Kind

SCENARIOS = ("ceiling", "fanout", "fanout-light", "fanout-capacity", "hot", "slow", "idle", "embedded")
# The embedded scenario's systems: the reference service first (the others are compared with it), then a
# user's app with the router included, its middleware not marked and marked head-only.
EMBEDDED_SYSTEMS = ("jobpulse", "embedded", "embedded-marked")


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201


def labelled(system: str, redis_kind: Kind) -> str:
    """A jobpulse system's name in the tables: as it is on one node, `jobpulse, cluster` on a cluster."""
    return system if redis_kind == "node" else f"{system}, cluster"


def run_streams(
    args: argparse.Namespace,
    scenario: str,
    system: str,
    jobs: int,
    watchers: int,
    steps: int,
    interval_ms: int,
    redis_kind: Kind = "node",
) -> Run:
    offered = jobs * watchers * 1000 / interval_ms if interval_ms else None
    common = {
        "scenario": scenario,
        "system": labelled(system, redis_kind) if system in JOBPULSE_APPS else system,
        "jobs": jobs,
        "watchers": watchers,
        "mode": "sse",
        "until": "end",
        "updates": jobs * steps,
        "offered_per_s": offered,
        "procs": args.generators,
        "connect_concurrency": args.connect_concurrency,
        "timeout_s": args.timeout_s,
        "web_cpus": args.web_cpus,
    }
    if system == "floor":
        with ceiling_stack("paced_app") as stack:
            query = f"steps={steps}&interval_ms={interval_ms}&delay_ms={args.start_delay_ms}"
            paths = [f"/paced/{job}?{query}" for job in range(jobs) for _ in range(watchers)]
            return drive(stack, Drive(paths=paths, **common))
    if system in JOBPULSE_APPS:
        with jobpulse_stack(
            max_jobs=jobs + 10, with_worker=True, system=system, redis_kind=redis_kind
        ) as stack:
            params = {"steps": steps, "interval_ms": interval_ms, "start_delay_ms": args.start_delay_ms}
            urls = submit_simulate_jobs(stack, jobs, params)
            paths = [url for url in urls for _ in range(watchers)]
            return drive(stack, Drive(paths=paths, **common))
    with naive_stack() as stack:
        ids = [uuid.uuid4().hex for _ in range(jobs)]
        paths = [f"/jobs/{job_id}/events" for job_id in ids for _ in range(watchers)]

        def publish() -> None:
            start_naive_publisher(stack, ids, steps, interval_ms, delay_ms=args.naive_start_delay_ms)

        return drive(stack, Drive(paths=paths, on_ready=publish, **common))


def run_slow(args: argparse.Namespace, stalled: int, redis_kind: Kind = "node") -> Run:
    readers, steps, interval_ms = args.slow_readers, args.slow_steps, args.slow_interval_ms
    with jobpulse_stack(max_jobs=10, with_worker=True, redis_kind=redis_kind) as stack:
        params = {"steps": steps, "interval_ms": interval_ms, "start_delay_ms": args.start_delay_ms}
        (path,) = submit_simulate_jobs(stack, 1, params)
        plan = Drive(
            scenario="slow",
            system=labelled("jobpulse", redis_kind)
            + (f", {stalled} stalled" if stalled else ", none stalled"),
            jobs=1,
            watchers=readers,
            paths=[path] * readers,
            stalled_paths=[path] * stalled,
            mode="sse",
            until="end",
            updates=steps,
            offered_per_s=readers * 1000 / interval_ms,
            procs=args.generators,
            connect_concurrency=args.connect_concurrency,
            timeout_s=args.timeout_s,
            web_cpus=args.web_cpus,
        )
        return drive(stack, plan)


def run_idle(args: argparse.Namespace, system: str, redis_kind: Kind = "node") -> Run:
    jobs, watchers = args.idle_jobs, args.idle_watchers
    common = {
        "scenario": "idle",
        "system": labelled(system, redis_kind) if system in JOBPULSE_APPS else system,
        "jobs": jobs,
        "watchers": watchers,
        "mode": "sse",
        "until": "close",
        "updates": 0,
        "offered_per_s": None,
        "procs": args.generators,
        "connect_concurrency": args.connect_concurrency,
        "timeout_s": args.timeout_s,
        "hold_s": args.idle_hold_s,
        "web_cpus": args.web_cpus,
    }
    if system in JOBPULSE_APPS:
        # No worker: the jobs stay queued, their streams open and idle.
        with jobpulse_stack(max_jobs=10, with_worker=False, system=system, redis_kind=redis_kind) as stack:
            urls = submit_simulate_jobs(stack, jobs, {"steps": 1, "interval_ms": 0})
            paths = [urls[i % jobs] for i in range(watchers)]
            return drive(stack, Drive(paths=paths, **common))
    with naive_stack() as stack:
        ids = [uuid.uuid4().hex for _ in range(jobs)]
        paths = [f"/jobs/{ids[i % jobs]}/events" for i in range(watchers)]
        return drive(stack, Drive(paths=paths, **common))


def run_ceiling(args: argparse.Namespace, app: str) -> Run:
    clients, events = args.ceiling_clients, args.ceiling_events
    with ceiling_stack(app) as stack:
        plan = Drive(
            scenario="ceiling",
            system={"streaming_app": "StreamingResponse", "raw_app": "bare ASGI"}[app],
            jobs=0,
            watchers=clients,
            paths=[f"/sse?n={events}"] * clients,
            mode="count",
            until="end",
            updates=clients * events,
            offered_per_s=None,
            procs=args.generators,
            connect_concurrency=args.connect_concurrency,
            timeout_s=args.timeout_s,
            web_cpus=args.web_cpus,
        )
        return drive(stack, plan)


def _by_system(results: list[Figures], system: str) -> Figures | None:
    """The first run of `system` ("jobpulse" also finds "jobpulse, none stalled")."""
    return next((f for f in results if f.run.system.partition(",")[0] == system), None)


def _ratio(a: Figures | None, b: Figures | None) -> float:
    if a is None or b is None or not b.deliveries_per_s:
        return float("nan")
    return a.deliveries_per_s / b.deliveries_per_s


def _saturation_note(f: Figures) -> str:
    """A saturated generator shares the box's CPU with the server; its reads queue behind one another."""
    if not f.gen_saturated:
        return ""
    if f.stamped:  # taken as the client's kernel received the bytes, before the generator's queue
        return f" (the generator was SATURATED; at its read p99 was {f.read_p99_ms:.1f} ms)"
    return " (the generator was SATURATED: this latency is partly its own)"


def _offered_cap(ours: Figures, other: Figures | None, target: float) -> float | None:
    """The most `ours`/`other` can be when `ours` delivers all it is offered, if that is below `target`."""
    offered = ours.run.offered_per_s
    if other is None or not offered or not other.deliveries_per_s:
        return None
    cap = offered / other.deliveries_per_s
    return cap if cap < target else None


def targets(scenario: str, results: list[Figures], ceiling: list[Figures]) -> list[str]:
    ours = _by_system(results, "jobpulse")
    if ours is None:
        return []
    lines = ["targets (jobpulse):"]
    if scenario in ("fanout", "fanout-capacity"):
        streaming = _by_system(ceiling, "StreamingResponse")
        naive = _by_system(results, "naive")
        lines.append(check("deliveries/s", ours.deliveries_per_s, ">=", 80_000))
        lines.append(check("ours/naive", _ratio(ours, naive), ">=", 3.5, "x"))
        if (cap := _offered_cap(ours, naive, 3.5)) is not None:
            lines.append(
                f"  (the offered load, {ours.run.offered_per_s:,.0f}/s, caps this ratio at {cap:.2f}x: "
                "see fanout-capacity)"
            )
        lines.append(check("ours/StreamingResponse ceiling", _ratio(ours, streaming), ">=", 0.8, "x"))
        if (raw := _by_system(ceiling, "bare ASGI")) is not None:
            lines.append(f"  (ours/bare-ASGI ceiling: {_ratio(ours, raw):.2f}x, no target)")
        if streaming is not None and _offered_cap(ours, streaming, 0.8) is not None:
            ours_us, ceiling_us = cpu_us_per_delivery(ours), cpu_us_per_delivery(streaming)
            lines.append(
                f"  (the offered load, {ours.run.offered_per_s:,.0f}/s, is itself below 0.8x this ceiling: "
                f"compare CPU per delivery instead, {ours_us:.1f} µs here vs {ceiling_us:.1f} "
                f"µs per event at the ceiling = {ceiling_us / ours_us:.2f}x)"
            )
    if scenario in ("fanout", "fanout-light"):
        light = ours.run.offered_per_s is not None and ours.run.offered_per_s <= 20_000
        note = "" if light else " (offered load above 20k/s: the latency target does not apply)"
        note += _saturation_note(ours)
        lines.append(check("p50", ours.p50_ms, "<=", 5, " ms") + note)
        lines.append(check("p99", ours.p99_ms, "<=", 50, " ms") + note)
    if scenario == "slow":
        stalled = next((f for f in results if f.run.gen.stalled), None)
        if stalled is not None:
            growth = (stalled.run.web_rss_peak_kib - stalled.run.web_rss_ready_kib) / stalled.run.gen.stalled
            missed_kib = stalled.run.updates * len(CEILING_EVENT) / 1024
            lines.append(
                check("web RSS growth per stalled watcher", growth, "<=", 128, " KiB")
                + f" (each missed ~{missed_kib:,.0f} KiB of events)"
            )
            lines.append(
                check(
                    "readers' p99 with stalled watchers / without", stalled.p99_ms / ours.p99_ms, "<=", 2, "x"
                )
            )
    if scenario == "hot":
        lines.append(check("web CPU per update", ours.web_cpu_per_update_ms, "<=", 10, " ms"))
        lines.append(check("p99", ours.p99_ms, "<=", 20, " ms") + _saturation_note(ours))
    if scenario == "idle":
        gen = ours.run.gen
        lines.append(check("watchers", gen.connected, ">=", 10_000))
        lines.append(check("errors", gen.errors + gen.dropped, "<=", 0))
        lines.append(check("RSS per watcher", ours.rss_per_stream_kib, "<=", 10, " KiB"))
        # The web holds one pub/sub connection and a pool of at most JOBPULSE_REDIS_POOL_SIZE + 1 (8 + 1).
        peak = max(ours.run.redis_clients_ready or 0, ours.run.redis_clients_peak or 0)
        lines.append(
            f"  target constant Redis connections: {ours.run.redis_clients_base} before, peak {peak} with "
            f"{gen.connected:,} streams open (bound 10) -> {'holds' if peak <= 10 else 'MISSES'}"
        )
        lines.append(check("new streams/s", ours.accept_per_s, ">=", 2_000))
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"], help="repeatable")
    parser.add_argument(
        "--systems",
        default="jobpulse,naive,floor",
        help="comma-separated: jobpulse,naive,floor (not for idle), or embedded,embedded-marked (a user's "
        "app with the router at /api, its middleware not marked / marked head-only)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, jobpulse only (unless --scenario), exit 1 on loss"
    )
    parser.add_argument(
        "--redis",
        choices=["node", "cluster", "both"],
        default="node",
        help="jobpulse's Redis: one node; a 3-shard Redis Cluster (3 primaries + 3 replicas) with the queue "
        "on a node of its own; or both, the same load on each, back to back (not for embedded)",
    )
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=20, help="per job")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--interval-ms", type=int, default=10)
    parser.add_argument("--light-interval-ms", type=int, default=50, help="fanout-light: 50x20 at 20k/s")
    parser.add_argument(
        "--capacity-interval-ms", type=int, default=4, help="fanout-capacity: 50x20 at 250k/s offered"
    )
    parser.add_argument("--capacity-steps", type=int, default=500, help="fanout-capacity: updates per job")
    parser.add_argument("--start-delay-ms", type=int, default=3000, help="jobpulse jobs: before step 1")
    parser.add_argument(
        "--embedded-start-delay-ms", type=int, default=6000, help="embedded jobs: before step 1"
    )
    parser.add_argument("--naive-start-delay-ms", type=int, default=500, help="after all watchers connect")
    parser.add_argument("--hot-watchers", type=int, default=1000)
    parser.add_argument("--slow-readers", type=int, default=200)
    parser.add_argument("--slow-stalled", type=int, default=100)
    parser.add_argument("--slow-steps", type=int, default=1500)
    parser.add_argument("--slow-interval-ms", type=int, default=5)
    parser.add_argument("--hot-steps", type=int, default=150)
    parser.add_argument("--hot-interval-ms", type=int, default=100)
    parser.add_argument("--idle-watchers", type=int, default=10_000)
    parser.add_argument("--idle-jobs", type=int, default=100)
    parser.add_argument("--idle-hold-s", type=float, default=5.0)
    parser.add_argument("--ceiling-clients", type=int, default=100)
    parser.add_argument("--ceiling-events", type=int, default=20_000, help="per client")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--connect-concurrency", type=int, default=200, help="connects in flight")
    parser.add_argument("--timeout-s", type=float, default=300)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the web process alone on one CPU; generators, worker and Redis on the others",
    )
    args = parser.parse_args(argv)
    args.web_cpus = None
    args.redis_kinds = list(KINDS) if args.redis == "both" else [args.redis]
    chosen = args.scenario or ["all"]
    args.scenarios = list(SCENARIOS) if "all" in chosen else chosen
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.smoke:
        args.system_list = ["jobpulse"]
        args.scenarios = args.scenarios if args.scenario else ["fanout", "hot", "idle"]
        args.jobs, args.watchers, args.steps, args.start_delay_ms = 3, 4, 20, 1500
        args.embedded_start_delay_ms = args.start_delay_ms
        args.hot_watchers, args.hot_steps = 30, 20
        args.idle_watchers, args.idle_jobs, args.idle_hold_s = 100, 5, 1.0
        args.timeout_s = 60
    return args


def _runs(args: argparse.Namespace, scenario: str, system: str) -> list[Run]:
    """The runs of `system` in `scenario`: none, one, or (slow) one without and one with stalled clients;
    for a jobpulse system, that on each Redis of `--redis`, back to back."""
    if system not in JOBPULSE_APPS:
        return _runs_on(args, scenario, system, "node")
    return [run for kind in args.redis_kinds for run in _runs_on(args, scenario, system, kind)]


def _runs_on(args: argparse.Namespace, scenario: str, system: str, redis_kind: Kind) -> list[Run]:
    if scenario in ("idle", "slow") and system == "floor":
        return []  # the floor is for paced updates; it neither idles nor handles slow clients
    if scenario == "slow":
        if system != "jobpulse":
            return []
        return [run_slow(args, 0, redis_kind), run_slow(args, args.slow_stalled, redis_kind)]
    if scenario == "idle":
        return [run_idle(args, system, redis_kind)]
    if scenario == "hot":
        hot = (args.hot_watchers, args.hot_steps, args.hot_interval_ms)
        return [run_streams(args, scenario, system, 1, *hot, redis_kind=redis_kind)]
    steps, interval = {
        "fanout-light": (args.steps, args.light_interval_ms),
        "fanout-capacity": (args.capacity_steps, args.capacity_interval_ms),
    }.get(scenario, (args.steps, args.interval_ms))
    load = (args.jobs, args.watchers, steps, interval)
    return [run_streams(args, scenario, system, *load, redis_kind=redis_kind)]


def _is_jobpulse(f: Figures) -> bool:
    """A run of one of jobpulse's apps, on either Redis ("jobpulse", "embedded, cluster", ...)."""
    name = f.run.system.partition(",")[0]
    return name in JOBPULSE_APPS


def _measured(run: Run) -> Figures:
    """The figures of `run`, saying first what went wrong in its logs or its clients, if anything."""
    if run.log_problems:
        say(
            f"  {run.system}: {len(run.log_problems)} error/warning lines in its logs, first: "
            f"{run.log_problems[0][:200]}"
        )
    if run.gen.error_samples:
        say(f"  {run.system}: client errors, first: {run.gen.error_samples[:3]}")
    return figures(run)


def run_embedded(args: argparse.Namespace) -> list[Figures]:
    """The fan-out load (`--jobs`, `--watchers`, `--steps`, `--interval-ms`) and the idle streams, each
    against the reference service and a user's app with the router (middleware not marked, marked)."""
    load = (args.jobs, args.watchers, args.steps, args.interval_ms)
    # A stream opened through BaseHTTPMiddleware costs about three times the CPU: on a busy box its 1000
    # connects outlast fanout's start delay, and the first updates would go out before all are there.
    later = argparse.Namespace(**{**vars(args), "start_delay_ms": args.embedded_start_delay_ms})
    streams = [_measured(run_streams(later, "embedded", system, *load)) for system in EMBEDDED_SYSTEMS]
    say(table("embedded: fan-out", STREAM_ROWS, streams))
    idle = [_measured(run_idle(args, system)) for system in EMBEDDED_SYSTEMS]
    say(table("embedded: idle streams", IDLE_ROWS, idle))
    say(
        table(
            "embedded: the reference service and a user's app with the router",
            embedded_rows(streams, idle),
            streams,
        )
    )
    return [*streams, *idle]


def run_scenario(args: argparse.Namespace, scenario: str, ceiling: list[Figures]) -> list[Figures]:
    results: list[Figures] = []
    for system in args.system_list:
        for run in _runs(args, scenario, system):
            results.append(_measured(run))
    rows = {"idle": IDLE_ROWS, "slow": SLOW_ROWS}.get(scenario, STREAM_ROWS)
    say(table(scenario, rows, results))
    ours = _by_system(results, "jobpulse")
    if ours is not None and scenario != "idle":
        if (naive := _by_system(results, "naive")) is not None:
            say(f"ours/naive deliveries/s: {_ratio(ours, naive):.2f}x")
        for f in ceiling:
            say(f"ours/{f.run.system} ceiling: {_ratio(ours, f):.2f}x")
        say(
            "web CPU µs per delivery: "
            + ", ".join(f"{f.run.system} {cpu_us_per_delivery(f):.1f}" for f in [*results, *ceiling])
        )
    for line in targets(scenario, results, ceiling):
        say(line)
    if len(args.redis_kinds) > 1 and scenario != "idle":  # idle's own table has its connections
        for system in (s for s in args.system_list if s in JOBPULSE_APPS):
            pair = [f for f in results if f.run.system.partition(",")[0] == system and not f.run.gen.stalled]
            if len(pair) > 1:
                title = f"{scenario}: {system} on one Redis node and on a Redis Cluster"
                say(table(title, redis_rows(pair), pair))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()
    say(
        f"machine: {platform.node()}, Python {platform.python_version()}, kernel {platform.release()}, "
        f"open files limit {nofile}"
    )
    if args.pin:
        split = split_cpus()
        if split is None:
            say("--pin: fewer than two CPUs, nothing pinned")
        else:
            # Every child starts on `rest` (inherited from us); each run moves its web process to `web`.
            args.web_cpus, rest = split
            os.sched_setaffinity(0, rest)
            say(f"pinned: the web process alone on CPU {sorted(args.web_cpus)}, the rest on {sorted(rest)}")
    failures: list[str] = []
    ceiling: list[Figures] = []
    for scenario in args.scenarios:
        started = time.monotonic()
        if scenario == "ceiling":
            ceiling = [figures(run_ceiling(args, app)) for app in ("streaming_app", "raw_app")]
            say(table("ceiling: pre-encoded events, as fast as clients read", CEILING_ROWS, ceiling))
        elif scenario == "embedded":
            failures += [problem for f in run_embedded(args) for problem in correctness_failures(f)]
        else:
            results = run_scenario(args, scenario, ceiling)
            for ours in filter(_is_jobpulse, results):
                failures += correctness_failures(ours)
        say(f"({time.monotonic() - started:.0f} s)\n")
    if failures:
        say("CORRECTNESS FAILURES (jobpulse):\n  " + "\n  ".join(failures))
        return 1
    say("jobpulse correctness: every stream got every event once, in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
