"""The README's "Use it in your own app", run as a separate project from a wheel of this checkout.

The wheel is built from a copy of the checkout (so no `build/` of an earlier build leaks into it) and
installed into a clean venv, not editable. The project is the README's blocks written into a folder that
also has a `web/` package of its own, which raises when imported, and a `web/static/jobpulse.js` of its
own: a library that imported the repo's `web` or `worker`, or served files relative to the working
directory, would fail here. The worker and the app run as the README's two commands, with the venv's
`arq` and `uvicorn`, from the project's folder; the page script runs in Chromium on a page of the app;
`jobpulse up --tasks tasks:tasks` runs from the same folder.
"""

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from arq import create_pool
from arq.connections import RedisSettings
from httpx_sse import aconnect_sse
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from playwright.async_api import async_playwright

from jobpulse.stack.redis_server import RedisServer, free_port
from tests.support.processes import ROOT, Process, process_env, wait_until_serving

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(300)]

logger = logging.getLogger(__name__)

README = (ROOT / "README.md").read_text()

# What a copy of the checkout leaves out: VCS, environments, caches, earlier builds.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)
# The web/ package of the project's own: any import of it by jobpulse shows as this error in the logs.
OWN_WEB_PACKAGE = 'raise ImportError("the project\'s own web/ package was imported")\n'
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
OWN_STATIC_SCRIPT = "// the project's own web/static/jobpulse.js, not jobpulse's\n"


def own_app_blocks() -> dict[str, tuple[str, str]]:
    """The section's blocks by their marker: name -> (language, code)."""
    found = re.findall(r"<!-- own-app: (\S+) -->\n```(\w+)\n(.*?)```", README, flags=re.DOTALL)
    blocks = {name: (language, code) for name, language, code in found}
    assert len(blocks) == len(found), "two README blocks carry the same own-app marker"
    return blocks


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{shlex.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass
class Installed:
    wheel: Path
    venv: Path
    install_seconds: float

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A wheel of the checkout, installed into a fresh venv with its dependencies from the index."""
    work = tmp_path_factory.mktemp("own-app-install")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"), str(source)],
        work,
    )
    (wheel,) = (work / "dist").glob("jobpulse-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], work)
    started = time.monotonic()
    run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        work,
    )
    seconds = time.monotonic() - started
    # `-n 0 --log-cli-level=INFO` shows it: quick once pip's cache holds the dependencies.
    logger.info("pip installed the wheel and its dependencies in %.1f s", seconds)
    return Installed(wheel, venv, seconds)


def test_the_wheel_installs_only_the_jobpulse_package(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (dist_info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        top_level = wheel.read(f"{dist_info}/top_level.txt").decode().split()
        scripts = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert top_level == ["jobpulse"]
    assert {name.split("/")[0] for name in names} == {"jobpulse", dist_info}
    assert "jobpulse/web/static/jobpulse.js" in names  # package data made it in
    assert "jobpulse = jobpulse.cli:main" in scripts
    # Installed, the distribution's files are jobpulse/, its metadata and its command, nothing else.
    site = Path(
        run(
            [str(installed.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            installed.venv,
        ).strip()
    )
    (record,) = site.glob("jobpulse-*.dist-info/RECORD")
    files = [line.split(",")[0] for line in record.read_text().splitlines()]
    outside = [file for file in files if file.split("/")[0] not in {"jobpulse", record.parent.name}]
    assert [Path(file).name for file in outside] == ["jobpulse"], outside  # the command, in the venv's bin/
    # From a folder of no project, the repo's other top-level packages are nowhere to be found.
    probe = (
        "import importlib.util as u; print([m for m in "
        + repr(["web", "worker", "stack", "tests", "benchmarks"])
        + " if u.find_spec(m)])"
    )
    assert run([str(installed.python), "-c", probe], installed.venv).strip() == "[]"


@dataclass
class OwnApp:
    project: Path
    url: str
    redis_url: str
    queue_name: str
    python: Path


@pytest.fixture(scope="module")
def own_app(
    installed: Installed, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OwnApp]:
    """The README's project, its worker and its app running from its folder with the venv's commands."""
    project = tmp_path_factory.mktemp("own-app-project")
    logs = tmp_path_factory.mktemp("own-app-logs")
    blocks = own_app_blocks()
    for name in ("tasks.py", "worker.py", "app.py"):
        language, code = blocks[name]
        assert language == "python"
        (project / name).write_text(code)
    (project / "web" / "static").mkdir(parents=True)
    (project / "web" / "__init__.py").write_text(OWN_WEB_PACKAGE)
    (project / "web" / "static" / "jobpulse.js").write_text(OWN_STATIC_SCRIPT)

    language, commands = blocks["commands"]
    assert language == "sh"
    worker_args, web_args = (shlex.split(line) for line in commands.splitlines() if line.strip())
    assert worker_args == ["arq", "worker.WorkerSettings"] and web_args == ["uvicorn", "app:app"]

    queue_name = f"own-app:{uuid.uuid4().hex[:8]}"
    env = process_env(redis_server.url, JOBPULSE_QUEUE_NAME=queue_name, JOBPULSE_WORKER_POLL_DELAY_S="0.05")
    env.pop("PYTHONPATH", None)  # nothing but the venv and the project's folder on sys.path
    env["PATH"] = f"{installed.venv / 'bin'}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(installed.venv)
    bin_dir = installed.venv / "bin"
    port = free_port()
    worker = Process([str(bin_dir / worker_args[0]), *worker_args[1:]], env, logs / "worker.log", cwd=project)
    web = Process(
        [str(bin_dir / web_args[0]), *web_args[1:], "--port", str(port)], env, logs / "web.log", cwd=project
    )
    url = f"http://127.0.0.1:{port}"
    worker.start()
    web.start()
    try:
        wait_until_serving(url, web, timeout=30)
        yield OwnApp(project, url, redis_server.url, queue_name, installed.python)
    finally:
        web.stop()
        worker.stop()
        for process in (web, worker):
            assert "own web/ package was imported" not in process.output(), process.output()
            assert "Traceback" not in process.output(), process.output()


def test_jobpulse_comes_from_the_venv_not_the_checkout(own_app: OwnApp) -> None:
    code = "import jobpulse, sys; print(jobpulse.__file__); print(sys.path)"
    file, path = run([str(own_app.python), "-c", code], own_app.project).splitlines()
    assert Path(file).is_relative_to(own_app.python.parents[1]), file
    assert str(ROOT) not in path, path


async def read_stream(client: httpx.AsyncClient, events_url: str) -> list[tuple[int, str, dict[str, Any]]]:
    """The job's events, read with httpx-sse until its terminal status."""
    events: list[tuple[int, str, dict[str, Any]]] = []
    with anyio.fail_after(30):
        async with aconnect_sse(client, "GET", events_url) as source:
            assert source.response.status_code == 200
            assert source.response.headers["x-served-by"] == "my-photos"  # the app's middleware, on a stream
            async for sse in source.aiter_sse():
                events.append((int(sse.id), sse.event, json.loads(sse.data)))
                if sse.event == "status" and events[-1][2]["status"] in {"succeeded", "failed", "cancelled"}:
                    break
    return events


def check_events(
    events: list[tuple[int, str, dict[str, Any]]], result: dict[str, Any]
) -> list[dict[str, Any]]:
    """Ids 1..N, the statuses of one clean run, the result; the progress events' data."""
    assert [event_id for event_id, _, _ in events] == list(range(1, len(events) + 1))
    statuses = [data["status"] for _, kind, data in events if kind == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert events[-1][2]["result"] == result
    progress = [data for _, kind, data in events if kind == "progress"]
    assert progress, "no progress event"
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    assert progress[-1]["progress"] == 100.0 and progress[-1]["current"] == progress[-1]["total"]
    return progress


def check_resize_events(events: list[tuple[int, str, dict[str, Any]]], width: int) -> None:
    progress = check_events(events, {"width": width})
    assert progress[-1]["total"] == 4
    assert all(p["message"] == f"resizing to {width}px" for p in progress)


async def test_the_readme_project_runs_jobs_through_its_own_app(own_app: OwnApp) -> None:
    async with httpx.AsyncClient(base_url=own_app.url, timeout=30) as client:
        answer = await client.post("/api/jobs", json={"task": "resize", "params": {"width": 64}})
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert answer.headers["location"] == f"/api/jobs/{job['id']}"
        assert job["events_url"] == f"/api/jobs/{job['id']}/events"
        assert answer.headers["x-served-by"] == "my-photos"
        check_resize_events(await read_stream(client, job["events_url"]), 64)

        # The app's own route, starting a job through JobsDep.
        answer = await client.post("/thumbnails", params={"width": 128})
        assert answer.status_code == 200, answer.text
        started = answer.json()
        assert started["events_url"] == f"/api/jobs/{started['id']}/events"
        check_resize_events(await read_stream(client, started["events_url"]), 128)
        state = (await client.get(f"/api/jobs/{started['id']}")).json()
        assert state["status"] == "succeeded" and state["task"] == "resize"

        # The CPU-bound task, reporting from its thread through progress_reporter(ctx).
        rounds = 200_000
        answer = await client.post("/api/jobs", json={"task": "checksum", "params": {"rounds": rounds}})
        assert answer.status_code == 202, answer.text
        digest = b"jobpulse"
        for _ in range(rounds):
            digest = hashlib.sha256(digest).digest()
        progress = check_events(
            await read_stream(client, answer.json()["events_url"]), {"sha256": digest.hex()}
        )
        assert progress[-1]["total"] == rounds
        assert all(p["current"] % 10_000 == 0 for p in progress)

        # Its own route and middleware, and a task it does not have.
        hello = await client.get("/hello")
        assert hello.json() == {"hello": "world"} and hello.headers["x-served-by"] == "my-photos"
        unknown = await client.post("/api/jobs", json={"task": "simulate", "params": {}})
        assert unknown.status_code == 422, unknown.text
        assert (
            await client.post("/jobs", json={"task": "resize", "params": {"width": 1}})
        ).status_code == 404

        # The script the page imports is jobpulse's, not the project's web/static/jobpulse.js.
        script = await client.get("/api/static/jobpulse.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        installed_script = own_app.python.parents[1].glob(
            "lib/python*/site-packages/jobpulse/web/static/jobpulse.js"
        )
        assert script.content == next(installed_script).read_bytes()
        assert "export function watchJob" in script.text


def chromium_path() -> str:
    """As tests/browser finds it: skipped without one, failed in CI, which must run it."""
    path = os.environ.get("JOBPULSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        reason = f"Chromium not found ({path}): install it or set JOBPULSE_CHROMIUM"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.mark.browser
async def test_the_readme_page_script_watches_a_job_in_chromium(own_app: OwnApp) -> None:
    """The browser snippet as it stands, as a module script of a page of the app (same origin)."""
    language, snippet = own_app_blocks()["page.js"]
    assert language == "js" and 'from "/api/static/jobpulse.js"' in snippet
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{own_app.url}/hello")
            await page.set_content('<progress max="100" value="0"></progress>')
            await page.add_script_tag(content=snippet, type="module")
            try:
                await page.wait_for_function(
                    "document.querySelector('progress').title.startsWith('done')", timeout=20_000
                )
            except PlaywrightTimeoutError:
                raise AssertionError(f"the page's watch never ended; its errors: {errors}") from None
            bar = page.locator("progress")
            assert await bar.get_attribute("title") == 'done: {"width":128}'
            assert await bar.evaluate("bar => bar.value") == 100
            assert not errors, errors
        finally:
            await browser.close()


async def test_plain_arq_functions_run_beside_the_tasks(own_app: OwnApp) -> None:
    """worker.py's `send_digest`, enqueued with arq as any arq function (the queue carries JSON)."""
    pool = await create_pool(
        RedisSettings.from_dsn(own_app.redis_url),
        default_queue_name=own_app.queue_name,
        job_serializer=lambda value: json.dumps(value).encode(),
        job_deserializer=json.loads,
    )
    try:
        job = await pool.enqueue_job("send_digest", "ada@example.com")
        assert job is not None
        assert await job.result(timeout=20) == "digest sent to ada@example.com"
    finally:
        await pool.aclose()


def test_jobpulse_up_serves_the_readme_tasks_without_an_app(
    installed: Installed, own_app: OwnApp, tmp_path: Path
) -> None:
    """`jobpulse up --tasks tasks:tasks` from the project's folder: a private Redis, a worker, the web app."""
    env = process_env("unused", PATH=f"{installed.venv / 'bin'}:{os.environ['PATH']}")
    del env["REDIS_URL"]  # its own private Redis
    env.pop("PYTHONPATH", None)
    port = free_port()
    args = ["jobpulse", "up", "--tasks", "tasks:tasks", "--port", str(port), "--data", str(tmp_path / "data")]
    up = Process(
        [str(installed.venv / "bin" / args[0]), *args[1:]], env, tmp_path / "up.log", cwd=own_app.project
    )
    url = f"http://127.0.0.1:{port}"
    up.start()
    try:
        wait_until_serving(url, up, timeout=30)
        answer = httpx.post(f"{url}/jobs", json={"task": "resize", "params": {"width": 32}})
        assert answer.status_code == 202, answer.text
        job = httpx.get(f"{url}/jobs/{answer.json()['id']}", params={"wait": 20}, timeout=30).json()
        assert job["status"] == "succeeded" and job["result"] == {"width": 32}, job
    finally:
        up.signal(signal.SIGINT)  # Ctrl-C, as the README's user stops it
        try:
            code = up.wait(30)
        except subprocess.TimeoutExpired:
            up.stop()
            raise
    output = up.output()
    assert code == 0, output
    assert "started a private Redis" in output and "jobpulse: stopped" in output, output
    assert "own web/ package was imported" not in output, output
