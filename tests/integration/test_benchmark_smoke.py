"""The benchmarks at smoke size: only correctness is asserted (performance is read, not tested)."""

import os
import subprocess
import sys

import pytest

from benchmarks.write_floor import EVENT
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=110
    )


def test_the_fanout_benchmark_smoke_run_loses_repeats_and_reorders_nothing() -> None:
    # Pinned, so that the pinning is exercised too: the web on one CPU, everything else on the others.
    result = _run("benchmarks.fanout", "--smoke", "--pin")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every stream got every event once, in order" in result.stdout, result.stdout
    if len(os.sched_getaffinity(0)) >= 2:
        assert "pinned: the web process alone on CPU [" in result.stdout, result.stdout
    assert "after the generator's parse p50/p99 ms" in result.stdout, result.stdout


def test_the_embedded_scenario_serves_the_same_load_through_a_users_app_and_loses_nothing() -> None:
    """The reference service, a user's app with the router at /api, and the same with its middleware
    marked head-only (benchmarks/fanout/embedded_app.py): every stream of each gets every event. About
    20 s: six stacks start and stop."""
    result = _run("benchmarks.fanout", "--smoke", "--scenario", "embedded")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every stream got every event once, in order" in result.stdout, result.stdout
    summary = result.stdout.partition("== embedded: the reference service and a user's app")[2]
    header, *rows = summary.splitlines()[1:]
    assert header.split() == ["jobpulse", "embedded", "embedded-marked"], summary
    labels = ["deliveries/s", "web CPU µs per delivery", "web RSS per idle watcher KiB"]
    assert all(any(row.startswith(label) for row in rows) for label in labels), summary
    idle = next(row for row in rows if row.startswith("idle streams / new streams/s"))
    assert idle.count("100 /") == 3, summary  # every idle stream was accepted, on each system


def test_the_write_floor_benchmark_delivers_every_byte_it_sends() -> None:
    result = _run("benchmarks.write_floor", "--sockets", "20", "--rounds", "5", "--interval-ms", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    sent = 20 * 5 * len(EVENT)
    assert f"bytes received/sent: {sent:,}/{sent:,}; short sends: 0" in result.stdout, result.stdout
    assert "sender CPU per send:" in result.stdout, result.stdout


def test_the_fanout_benchmark_runs_the_same_load_on_one_redis_and_on_a_cluster_and_loses_nothing() -> None:
    """`--redis both`: the fan-out load on one Redis node, then on a 3-shard Redis Cluster with the
    queue on a node of its own (benchmarks/redis_deployment.py), side by side. About 15 s: a cluster
    starts and stops."""
    result = _run("benchmarks.fanout", "--smoke", "--scenario", "fanout", "--redis", "both")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every stream got every event once, in order" in result.stdout, result.stdout
    summary = result.stdout.partition("== fanout: jobpulse on one Redis node and on a Redis Cluster")[2]
    header, *rows = summary.splitlines()[1:]
    assert header.split() == ["jobpulse", "jobpulse,", "cluster"], summary
    labels = ["deliveries/s", "web CPU µs per delivery", "latency p50 / p99 ms", "web conns per node, peak"]
    assert all(any(row.startswith(label) for row in rows) for label in labels), summary
    redis = next(row for row in rows if row.startswith("redis "))
    assert "one node" in redis and "3 shards + queue node" in redis, summary
    conns = next(row for row in rows if row.startswith("web conns per node, all streams open"))
    assert "+" in conns and "queue =" in conns, summary  # counted on each shard and on the queue node
