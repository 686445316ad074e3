"""Figures from runs, the tables printed, and the issue's targets next to them."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.fanout.runner import Run

# A generator busy this share of the time events arrived is a bottleneck: events come in bursts (a hot
# update is a thousand at once), so well before 100 % some wait in its queue and it times that wait.
GEN_SATURATED = 0.8


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Figures:
    run: Run
    deliveries: int  # progress events received (sse) or events (count)
    deliveries_per_s: float
    # Latency from the event's ts to the client's kernel receiving it where the kernel stamped the reads
    # (`stamped`), else to the generator's read: what the targets are read from.
    stamped: bool
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # Share of stamped events read together with a newer one, which then carry its stamp: exact if the
    # server wrote them together (it batches when behind), an upper bound if the generator read late.
    read_with_newer: float
    alone_p50_ms: float  # over the events that ended their read: the stamp is their own
    alone_p99_ms: float
    read_p50_ms: float  # at the generator's read (queued behind its other reads when it is busy)
    read_p99_ms: float
    parsed_p50_ms: float  # once the generator had parsed the event (queued behind its other watchers)
    parsed_p99_ms: float
    web_cpu_per_update_ms: float
    gen_busy: float  # generator CPU / (its wall time x processes)
    gen_delivery_busy: float  # the busiest generator's CPU share from its first event to the run's end
    rss_per_stream_kib: float
    accept_per_s: float

    @property
    def gen_saturated(self) -> bool:
        return max(self.gen_busy, self.gen_delivery_busy) >= GEN_SATURATED


def figures(run: Run) -> Figures:
    gen = run.gen
    read = sorted(gen.latencies)
    arrived = sorted(gen.arrival_latencies)
    # Every read of a progress event is stamped or none is (a kernel without the option).
    stamped = bool(arrived) and len(arrived) == len(read)
    lat = arrived if stamped else read
    alone = sorted(gen.exact_arrival_latencies)
    parsed = sorted(gen.parsed_latencies)
    deliveries = len(read) if read else gen.events
    span = gen.last_event_at - gen.first_event_at
    connect_span = gen.connected_at - gen.connect_started_at
    return Figures(
        run=run,
        stamped=stamped,
        deliveries=deliveries,
        deliveries_per_s=deliveries / span if span > 0 else math.nan,
        p50_ms=percentile(lat, 50) * 1000,
        p90_ms=percentile(lat, 90) * 1000,
        p99_ms=percentile(lat, 99) * 1000,
        max_ms=(lat[-1] * 1000) if lat else math.nan,
        read_with_newer=1 - len(alone) / len(arrived) if stamped else math.nan,
        alone_p50_ms=percentile(alone, 50) * 1000,
        alone_p99_ms=percentile(alone, 99) * 1000,
        read_p50_ms=percentile(read, 50) * 1000,
        read_p99_ms=percentile(read, 99) * 1000,
        parsed_p50_ms=percentile(parsed, 50) * 1000,
        parsed_p99_ms=percentile(parsed, 99) * 1000,
        web_cpu_per_update_ms=run.web_cpu_s / run.updates * 1000 if run.updates else math.nan,
        gen_busy=gen.cpu_s / (gen.wall_s * run.gen_procs) if gen.wall_s else math.nan,
        gen_delivery_busy=gen.delivery_busy,
        rss_per_stream_kib=(run.web_rss_ready_kib - run.web_rss_base_kib) / gen.connected
        if gen.connected
        else math.nan,
        accept_per_s=gen.connected / connect_span if connect_span > 0 else math.nan,
    )


def _n(value: float | int | None, fmt: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


Row = tuple[str, Callable[[Figures], str]]

# Rows more than one table shows.
WEB_CPU_ROW: Row = ("web CPU s (window s)", lambda f: f"{f.run.web_cpu_s:.2f} ({f.run.window_s:.1f})")
GENERATOR_ROW: Row = (
    "generator CPU s (busy: run / events)",
    lambda f: (
        f"{f.run.gen.cpu_s:.2f} ({f.gen_busy:.0%} / "
        f"{f'{f.gen_delivery_busy:.0%}' if f.gen_delivery_busy else 'no events'}"
        f"{' SATURATED' if f.gen_saturated else ''}) x{f.run.gen_procs}"
    ),
)
RSS_PER_WATCHER_ROW: Row = ("web RSS per watcher KiB", lambda f: _n(f.rss_per_stream_kib, ".1f"))
REDIS_CLIENTS_ROW: Row = (
    "redis clients base/ready/peak/end",
    lambda f: (
        f"{_n(f.run.redis_clients_base)}/{_n(f.run.redis_clients_ready)}/"
        f"{_n(f.run.redis_clients_peak)}/{_n(f.run.redis_clients_end)}"
    ),
)


def per_node(counts: dict[str, int]) -> str:
    """Connections per node: `9` on one node; on a cluster `4/4/4 +1 queue = 13` (shards 1-3, queue)."""
    if not counts:
        return "-"
    shards = [n for role, n in counts.items() if role.startswith("shard")]
    if not shards:
        return _n(sum(counts.values()))
    return f"{'/'.join(map(str, shards))} +{counts.get('queue', 0)} queue = {sum(counts.values())}"


def redis_cpu_split(f: "Figures") -> str:
    """Redis CPU seconds of the window: in all, and on a cluster by shard primary, queue and replicas."""
    by_node = f.run.redis_cpu_by_node
    if len(by_node) <= 1:
        return _n(f.run.redis_cpu_s, ".2f")
    shards = "/".join(f"{s:.2f}" for role, s in by_node.items() if role.startswith("shard"))
    replicas = sum(s for role, s in by_node.items() if role.startswith("replica"))
    queue = by_node.get("queue", 0.0)
    return f"{_n(f.run.redis_cpu_s, '.2f')}: {shards} +{queue:.2f} queue +{replicas:.2f} replicas"


REDIS_ROWS: list[Row] = [
    (
        "redis",
        lambda f: {"node": "one node", "cluster": "3 shards + queue node"}.get(f.run.redis_kind or "", "-"),
    ),
    ("jobs per shard", lambda f: "/".join(map(str, f.run.jobs_per_shard.values())) or "-"),
    ("web conns per node, all streams open", lambda f: per_node(f.run.web_conns_ready)),
    ("web conns per node, peak", lambda f: per_node(f.run.web_conns_peak)),
    ("worker conns per node", lambda f: per_node(f.run.worker_conns_ready)),
]

STREAM_ROWS: list[Row] = [
    ("streams (jobs x watchers)", lambda f: f"{f.run.jobs} x {f.run.watchers} = {f.run.streams}"),
    ("offered deliveries/s (nominal)", lambda f: _n(f.run.offered_per_s)),
    ("progress events received/expected", lambda f: f"{f.deliveries:,}/{f.run.updates * f.run.watchers:,}"),
    ("deliveries/s", lambda f: _n(f.deliveries_per_s)),
    ("latency taken at", lambda f: "client's kernel" if f.stamped else "generator's read"),
    ("events read with a newer one", lambda f: _n(f.read_with_newer, ".1%")),
    ("latency p50 ms", lambda f: _n(f.p50_ms, ".1f")),
    ("latency p90 ms", lambda f: _n(f.p90_ms, ".1f")),
    ("latency p99 ms", lambda f: _n(f.p99_ms, ".1f")),
    ("latency max ms", lambda f: _n(f.max_ms, ".1f")),
    (
        "events that ended their read p50/p99 ms",
        lambda f: f"{_n(f.alone_p50_ms, '.1f')} / {_n(f.alone_p99_ms, '.1f')}",
    ),
    (
        "at the generator's read p50/p99 ms",
        lambda f: f"{_n(f.read_p50_ms, '.1f')} / {_n(f.read_p99_ms, '.1f')}",
    ),
    (
        "after the generator's parse p50/p99 ms",
        lambda f: f"{_n(f.parsed_p50_ms, '.1f')} / {_n(f.parsed_p99_ms, '.1f')}",
    ),
    (
        "lost / duplicated / out of order",
        lambda f: f"{f.run.gen.lost} / {f.run.gen.duplicated} / {f.run.gen.out_of_order}",
    ),
    ("streams without end / errors", lambda f: f"{f.run.gen.incomplete} / {f.run.gen.errors}"),
    (
        "all connected before 1st update",
        lambda f: {None: "-", True: "yes", False: "NO"}[f.run.connected_before_first_update],
    ),
    WEB_CPU_ROW,
    ("web CPU ms per published update", lambda f: _n(f.web_cpu_per_update_ms, ".2f")),
    ("worker/publisher CPU s", lambda f: _n(f.run.worker_cpu_s, ".2f")),
    ("redis CPU s", lambda f: _n(f.run.redis_cpu_s, ".2f")),
    GENERATOR_ROW,
    ("web RSS ready / peak", lambda f: f"{_mib(f.run.web_rss_ready_kib)} / {_mib(f.run.web_rss_peak_kib)}"),
    RSS_PER_WATCHER_ROW,
    REDIS_CLIENTS_ROW,
    *REDIS_ROWS,
]


def _growth_per_stalled(f: "Figures") -> str:
    stalled = f.run.gen.stalled
    return _n((f.run.web_rss_peak_kib - f.run.web_rss_ready_kib) / stalled, ".1f") if stalled else "-"


SLOW_ROWS: list[Row] = [
    *STREAM_ROWS,
    ("stalled watchers (stopped reading)", lambda f: _n(f.run.gen.stalled)),
    ("web RSS growth per stalled watcher KiB", _growth_per_stalled),
]

IDLE_ROWS: list[Row] = [
    ("streams requested (over jobs)", lambda f: f"{f.run.streams} ({f.run.jobs} jobs)"),
    ("streams accepted (200)", lambda f: _n(f.run.gen.connected)),
    ("errors", lambda f: _n(f.run.gen.errors)),
    ("dropped while held", lambda f: _n(f.run.gen.dropped)),
    ("new streams accepted/s", lambda f: _n(f.accept_per_s)),
    (
        "web RSS base / ready / peak",
        lambda f: (
            f"{_mib(f.run.web_rss_base_kib)} / "
            f"{_mib(f.run.web_rss_ready_kib)} / {_mib(f.run.web_rss_peak_kib)}"
        ),
    ),
    RSS_PER_WATCHER_ROW,
    REDIS_CLIENTS_ROW,
    *REDIS_ROWS,
    WEB_CPU_ROW,
    GENERATOR_ROW,
]

CEILING_ROWS: list[Row] = [
    ("clients x events each", lambda f: f"{f.run.streams} x {f.run.updates // max(1, f.run.streams):,}"),
    ("events received", lambda f: _n(f.run.gen.events)),
    ("events/s", lambda f: _n(f.deliveries_per_s)),
    ("errors / dropped", lambda f: f"{f.run.gen.errors} / {f.run.gen.dropped}"),
    WEB_CPU_ROW,
    GENERATOR_ROW,
]


def cpu_us_per_delivery(f: Figures) -> float:
    """Web CPU per event delivered, in µs: the efficiency figure that does not depend on offered load."""
    return f.run.web_cpu_s / f.deliveries * 1e6 if f.deliveries else math.nan


def redis_rows(runs: list[Figures]) -> list[Row]:
    """The side-by-side summary of one load on one Redis node and on a cluster (`--redis both`): one
    column per run, the first (one node) the one the others are compared with."""
    ref = runs[0]

    def vs(value: float, reference: float) -> str:
        return _n(value / reference, ".2f") + "x" if reference else "-"

    return [
        REDIS_ROWS[0],
        ("offered deliveries/s (nominal)", lambda f: _n(f.run.offered_per_s)),
        ("deliveries/s", lambda f: _n(f.deliveries_per_s)),
        ("  vs one node", lambda f: vs(f.deliveries_per_s, ref.deliveries_per_s)),
        ("web CPU µs per delivery", lambda f: _n(cpu_us_per_delivery(f), ".1f")),
        ("  vs one node", lambda f: vs(cpu_us_per_delivery(f), cpu_us_per_delivery(ref))),
        ("latency p50 / p99 ms", lambda f: f"{_n(f.p50_ms, '.1f')} / {_n(f.p99_ms, '.1f')}"),
        next(row for row in STREAM_ROWS if row[0] == "all connected before 1st update"),
        ("worker CPU s", lambda f: _n(f.run.worker_cpu_s, ".2f")),
        ("redis CPU s: shards +queue +replicas", redis_cpu_split),
        *REDIS_ROWS[1:],
        (
            "lost / duplicated / out of order",
            lambda f: f"{f.run.gen.lost} / {f.run.gen.duplicated} / {f.run.gen.out_of_order}",
        ),
    ]


def embedded_rows(streams: list[Figures], idle: list[Figures]) -> list[Row]:
    """The side-by-side summary of the embedded scenario: one column per system (the rows read its fan-out
    run), the first system (the reference service) the one the others are compared with."""
    idle_of = {f.run.system: f for f in idle}
    ref, ref_idle = streams[0], idle_of[streams[0].run.system]

    def vs(value: float, reference: float) -> str:
        return _n(value / reference, ".2f") + "x" if reference else "-"

    def rss(f: Figures) -> float:
        return idle_of[f.run.system].rss_per_stream_kib

    return [
        ("offered deliveries/s (nominal)", lambda f: _n(f.run.offered_per_s)),
        ("deliveries/s", lambda f: _n(f.deliveries_per_s)),
        ("  vs the reference", lambda f: vs(f.deliveries_per_s, ref.deliveries_per_s)),
        ("web CPU µs per delivery", lambda f: _n(cpu_us_per_delivery(f), ".1f")),
        ("  vs the reference", lambda f: vs(cpu_us_per_delivery(f), cpu_us_per_delivery(ref))),
        ("latency p50 / p99 ms", lambda f: f"{_n(f.p50_ms, '.1f')} / {_n(f.p99_ms, '.1f')}"),
        next(row for row in STREAM_ROWS if row[0] == "all connected before 1st update"),
        ("web RSS per idle watcher KiB", lambda f: _n(rss(f), ".1f")),
        ("  vs the reference", lambda f: vs(rss(f), ref_idle.rss_per_stream_kib)),
        (
            "idle streams / new streams/s",
            lambda f: (
                f"{_n(idle_of[f.run.system].run.gen.connected)} / {_n(idle_of[f.run.system].accept_per_s)}"
            ),
        ),
        ("web CPU s idle (window s)", lambda f: WEB_CPU_ROW[1](idle_of[f.run.system])),
    ]


def table(title: str, rows: list[Row], runs: list[Figures]) -> str:
    headers = ["", *(f.run.system for f in runs)]
    body = [[label, *(render(f) for f in runs)] for label, render in rows]
    widths = [max(len(str(row[i])) for row in [headers, *body]) for i in range(len(headers))]
    lines = [f"== {title}"]
    for row in [headers, *body]:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def check(label: str, value: float, op: str, target: float, unit: str = "") -> str:
    holds = value >= target if op == ">=" else value <= target
    verdict = "-" if math.isnan(value) else ("holds" if holds else "MISSES")
    return f"  target {label} {op} {target:g}{unit}: measured {value:,.3g}{unit} -> {verdict}"


def correctness_failures(f: Figures) -> list[str]:
    gen = f.run.gen
    problems = []
    names = ["lost", "duplicated", "out_of_order", "errors", "dropped"]
    if f.run.scenario != "idle":
        names.append("incomplete")  # idle streams are closed by us before their job ends
    for name in names:
        if getattr(gen, name):
            problems.append(f"{f.run.scenario}/{f.run.system}: {getattr(gen, name)} {name}")
    if f.run.scenario != "idle" and gen.connected != gen.watchers:
        problems.append(f"{f.run.scenario}/{f.run.system}: {gen.connected}/{gen.watchers} connected")
    return problems
