"""How jobpulse's costs grow with watchers, jobs and update rate: one small table per dimension.

    .venv/bin/python -m benchmarks.fanout.sweep            # about 1.5 minutes
    .venv/bin/python -m benchmarks.fanout.sweep --quick    # fewer points

Each point is one `fanout`-style run of jobpulse alone (`benchmarks.fanout.__main__.run_streams`), with
the same stacks, load generator and measurements as the main benchmark.
"""

import argparse
import sys

from benchmarks.fanout.__main__ import parse_args, run_streams, say
from benchmarks.fanout.procs import raise_nofile
from benchmarks.fanout.report import Figures, correctness_failures, figures

HEADER = (
    f"{'jobs x watchers':>16} {'interval':>9} {'offered/s':>10} {'delivered/s':>12} {'p50 ms':>8} "
    f"{'p99 ms':>8} {'CPU/update ms':>14} {'CPU/delivery µs':>16} {'RSS/watcher KiB':>16}"
)


def _row(f: Figures, interval_ms: int) -> str:
    run = f.run
    cpu_per_delivery = run.web_cpu_s / f.deliveries * 1e6 if f.deliveries else float("nan")
    return (
        f"{f'{run.jobs} x {run.watchers}':>16} {f'{interval_ms} ms':>9} {run.offered_per_s or 0:>10,.0f} "
        f"{f.deliveries_per_s:>12,.0f} {f.p50_ms:>8.1f} {f.p99_ms:>8.1f} {f.web_cpu_per_update_ms:>14.2f} "
        f"{cpu_per_delivery:>16.1f} {f.rss_per_stream_kib:>16.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout.sweep", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="two points per dimension")
    quick = parser.parse_args(argv).quick
    args = parse_args(["--systems", "jobpulse"])
    raise_nofile()
    dimensions = {
        "watchers (one job, 10 ms)": [
            (1, w, 10, 300) for w in ((250, 1000) if quick else (250, 500, 1000, 2000))
        ],
        "jobs (20 watchers each, 10 ms)": [(j, 20, 10, 100) for j in ((10, 50) if quick else (10, 50, 100))],
        "update rate (one job x 1000)": [
            (1, 1000, i, 3000 // i) for i in ((50, 10) if quick else (50, 20, 10))
        ],
    }
    failures: list[str] = []
    for title, points in dimensions.items():
        say(f"== {title}\n{HEADER}")
        for jobs, watchers, interval_ms, steps in points:
            f = figures(run_streams(args, "sweep", "jobpulse", jobs, watchers, steps, interval_ms))
            failures += correctness_failures(f)
            say(_row(f, interval_ms))
        say("")
    if failures:
        say("CORRECTNESS FAILURES:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
