"""`jobpulse web`, `jobpulse worker` and `jobpulse up` with `--tasks` / `JOBPULSE_TASKS`: a user's registry
served with no Python app written, from the user's own folder (not a jobpulse checkout), as real processes."""

import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from jobpulse.settings import Settings
from jobpulse.stack.redis_server import free_port
from tests.support.processes import Process, process_env, wait_until_serving

pytestmark = pytest.mark.slow

JOBPULSE = [sys.executable, "-m", "jobpulse.cli"]

TASKS = textwrap.dedent(
    """
    from pydantic import BaseModel
    from jobpulse import TaskRegistry, progress

    tasks = TaskRegistry()

    class Greet(BaseModel):
        name: str

    @tasks.task
    async def greet(ctx, params: Greet) -> dict:
        await progress(ctx, 50, "thinking")
        return {"greeting": f"hello {params.name}"}
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's folder with only a tasks.py (and folders named like ours, which must not matter)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "tasks.py").write_text(TASKS)
    for name in ("web", "worker"):
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            "raise ImportError('the user\\'s own package, not ours')\n"
        )
    return folder


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    return process_env(settings.redis_url, JOBPULSE_QUEUE_NAME=settings.queue_name, **extra)


def greet_and_watch(url: str) -> None:
    with httpx.Client(base_url=url, timeout=20) as client:
        submitted = client.post("/jobs", json={"task": "greet", "params": {"name": "ada"}})
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        refused = client.post("/jobs", json={"task": "simulate", "params": {}})
        assert refused.status_code == 422 and "greet" in refused.json()["detail"][0]["msg"]
        done = client.get(f"/jobs/{job['id']}", params={"wait": 15}).json()
        assert done["status"] == "succeeded" and done["result"] == {"greeting": "hello ada"}
        with connect_sse(client, "GET", job["events_url"]) as source:
            events = [(int(sse.id), sse.event) for sse in source.iter_sse()]
    assert events == [(1, "status"), (2, "status"), (3, "progress"), (4, "status")]


def test_web_and_worker_serve_a_registry_named_by_tasks(project: Path, settings: Settings) -> None:
    port = free_port()
    env = env_for(settings)
    worker = Process(
        [*JOBPULSE, "worker", "--tasks", "tasks:tasks"], env, project / "worker.log", cwd=project
    )
    web = Process(
        [*JOBPULSE, "web", "--tasks", "tasks:tasks", "--port", str(port)],
        env,
        project / "web.log",
        cwd=project,
    )
    with _running(worker), _running(web):
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, web)
        greet_and_watch(url)


def test_jobpulse_tasks_in_the_environment_does_the_same(project: Path, settings: Settings) -> None:
    port = free_port()
    env = env_for(settings, JOBPULSE_TASKS="tasks:tasks", PORT=str(port))
    worker = Process([*JOBPULSE, "worker"], env, project / "worker.log", cwd=project)
    web = Process([*JOBPULSE, "web"], env, project / "web.log", cwd=project)
    with _running(worker), _running(web):
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, web)
        greet_and_watch(url)


def test_up_with_tasks_runs_redis_worker_and_web_till_ctrl_c(project: Path, settings: Settings) -> None:
    port = free_port()
    env = {k: v for k, v in env_for(settings).items() if k != "REDIS_URL"}  # up starts its own Redis
    up = Process(
        [*JOBPULSE, "up", "--tasks", "tasks:tasks", "--port", str(port), "--data", str(project / "redis")],
        env,
        project / "up.log",
        cwd=project,
    )
    up.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, up, timeout=40)
        greet_and_watch(url)
    finally:
        up.signal(signal.SIGINT)
        code = up.wait(30)
    assert code == 0, up.output()
    assert "started a private Redis" in up.output()


def test_up_cluster_runs_the_store_on_a_private_redis_cluster_and_stops_it(
    project: Path, settings: Settings
) -> None:
    """`jobpulse up --cluster`: the cluster shape to try (docs/SCALING.md), nothing of it left after."""
    port = free_port()
    env = {k: v for k, v in env_for(settings).items() if k != "REDIS_URL"}
    up = Process(
        [*JOBPULSE, "up", "--cluster", "--tasks", "tasks:tasks", "--port", str(port)],
        env,
        project / "up.log",
        cwd=project,
    )
    up.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, up, timeout=60)
        greet_and_watch(url)
    finally:
        up.signal(signal.SIGINT)
        code = up.wait(30)
    assert code == 0, up.output()
    found = re.search(r"started a private Redis Cluster \(redis://127\.0\.0\.1:(\d+)/0", up.output())
    assert found, up.output()
    with pytest.raises(OSError):  # stopped with the rest
        socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=1).close()


@pytest.mark.parametrize("command", ["web", "worker", "up"])
def test_without_a_registry_outside_a_checkout_it_says_how_to_name_one(project: Path, command: str) -> None:
    env = {k: v for k, v in process_env("redis://127.0.0.1:1/0").items() if k != "JOBPULSE_TASKS"}
    run = subprocess.run(
        [*JOBPULSE, command], cwd=project, env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2, run.stderr
    assert "--tasks module:attribute" in run.stderr and "JOBPULSE_TASKS" in run.stderr


def test_a_registry_that_cannot_be_found_stops_the_web_with_the_reason(
    project: Path, settings: Settings
) -> None:
    port = free_port()
    env = env_for(settings)
    web = Process(
        [*JOBPULSE, "web", "--tasks", "tasks:missing", "--port", str(port)],
        env,
        project / "web.log",
        cwd=project,
    )
    web.start()
    try:
        code = web.wait(30)
    finally:
        web.stop()
    assert code != 0
    assert "has no attribute 'missing'" in web.output()


class _running:
    """A child process for the length of a `with` block; its log is shown if the block fails."""

    def __init__(self, process: Process) -> None:
        self.process = process

    def __enter__(self) -> Process:
        self.process.start()
        time.sleep(0.05)
        return self.process

    def __exit__(self, *exc: object) -> None:
        self.process.stop()
