"""Upload one large file to a running jobpulse and report how smoothly its progress arrives.

    scripts/up &                                   # or any running stack
    .venv/bin/python benchmarks/upload_large.py --mb 500

Prints upload throughput, processing throughput, how many progress events came and the longest gap
between two of them (the bar's smoothness), and the web process's peak memory if its pid is given.
"""

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse


def make_file(path: Path, megabytes: int) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for _ in range(megabytes):
            f.write(block)


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("JOBPULSE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--mb", type=int, default=500, help="file size in MiB")
    parser.add_argument("--web-pid", type=int, help="report this process's peak resident memory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, httpx.Client(base_url=args.url, timeout=600) as client:
        path = Path(tmp) / "large.bin"
        make_file(path, args.mb)
        size = path.stat().st_size
        started = time.monotonic()
        with path.open("rb") as f:
            response = client.post("/uploads", files={"file": ("large.bin", f)})
        uploaded = time.monotonic()
        response.raise_for_status()
        job = response.json()

        stamps: list[float] = []
        final: dict[str, object] = {}
        with connect_sse(client, "GET", job["events_url"]) as source:
            for event in source.iter_sse():
                data = json.loads(event.data)
                if event.event == "progress":
                    stamps.append(time.monotonic())
                elif event.event == "status" and data["status"] in ("succeeded", "failed", "cancelled"):
                    final = data
                    break
        finished = time.monotonic()

    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    mib = size / 1024 / 1024
    lines = [
        f"file                {mib:.0f} MiB",
        f"upload              {uploaded - started:.2f} s  ({mib / (uploaded - started):.0f} MiB/s)",
        f"processing          {finished - uploaded:.2f} s  ({mib / (finished - uploaded):.0f} MiB/s)",
        f"status              {final.get('status')}",
        f"progress events     {len(stamps)}",
    ]
    if gaps:
        median_ms, max_ms = statistics.median(gaps) * 1000, max(gaps) * 1000
        lines.append(f"gap between events  median {median_ms:.0f} ms, max {max_ms:.0f} ms")
    if args.web_pid and (rss := peak_rss_mib(args.web_pid)) is not None:
        lines.append(f"web peak RSS        {rss:.0f} MiB")
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
