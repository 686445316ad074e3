"""`arq --check worker.WorkerSettings`, the worker's health check, against a real `arq worker` process."""

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import cast

import pytest
from redis import Redis

from jobpulse.stack.redis_server import RedisServer
from jobpulse.worker.arq_settings import health_check_key
from tests.support.processes import ROOT, process_env, worker_process

pytestmark = pytest.mark.slow


def arq_check(env: dict[str, str]) -> int:
    """The exit code of the health check as docker-compose runs it."""
    args = [sys.executable, "-m", "arq", "worker.WorkerSettings", "--check"]
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, timeout=30, check=False).returncode


def wait_for_check(env: dict[str, str], code: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (last := arq_check(env)) != code:
        assert time.monotonic() < deadline, f"arq --check still exits {last}, not {code}"
        time.sleep(0.1)


def test_arq_check_passes_while_this_hosts_worker_runs_and_fails_after(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    queue = f"test:{uuid.uuid4().hex[:8]}"
    env = process_env(
        redis_server.url,
        JOBPULSE_QUEUE_NAME=queue,
        JOBPULSE_WORKER_HEALTH_CHECK_S="1",
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
    )
    redis = Redis.from_url(redis_server.url)
    key = health_check_key(queue)
    assert key == f"{queue}:health-check:{socket.gethostname()}"
    # A fresh queue, and another host's worker on it, which says nothing about this host's.
    redis.set(f"{queue}:health-check:another-host", b"alive")
    assert arq_check(env) == 1
    worker = worker_process(env, tmp_path / "worker.log").start()
    try:
        wait_for_check(env, 0, within_s=20)
        # Refreshed every second, kept one second longer: arq's default was an hour.
        ttl_ms = cast(int, redis.pttl(key))  # the sync client's methods are typed for both clients
        assert 0 < ttl_ms <= 2000
        worker.signal(signal.SIGKILL)  # no goodbye: the key must expire by itself
        worker.wait(10)
        wait_for_check(env, 1, within_s=5)
        assert not redis.exists(key)
    finally:
        worker.stop()
        redis.close()
