"""The `jobpulse` command, run as a real process against a real stack: its output and its exit codes.

Each command runs with `anyio.run_process` (or `open_process`), so this test's event loop keeps serving
the in-process web app and worker while the command talks to them. Its stdout is a pipe, so it prints
plain lines or JSON lines; the live rich view is tested under a pseudo-terminal.
"""

import fcntl
import hashlib
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.text import TextReceiveStream

from jobpulse.cli.arguments import parse_param
from jobpulse.cli.exit_codes import ExitCode
from jobpulse.cli.rate import RateEstimator
from jobpulse.models import ProgressEvent
from jobpulse.stack.redis_server import free_port
from tests.conftest import Stack, StackFactory
from tests.support.processes import ROOT

pytestmark = pytest.mark.anyio

JOBPULSE = [sys.executable, "-m", "jobpulse.cli"]
UNKNOWN_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # well-formed, never issued


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    """The stack with every progress update published, not coalesced, so the expected lines are exact."""
    return await make_stack(progress_interval_ms=0)


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would steer the command: no JOBPULSE_*, no TTY override."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOBPULSE_") and k not in ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "FORCE_COLOR")
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


async def jobpulse(*args: str, url: str | None = None, env: Mapping[str, str] | None = None) -> Run:
    """`jobpulse ARGS` (with `--url URL` when given) to its end."""
    command = [*JOBPULSE, *(["--url", url] if url else []), *args]
    with anyio.fail_after(30):
        result = await anyio.run_process(command, check=False, env=dict(env or cli_env()))
    run = Run(result.returncode, result.stdout.decode(), result.stderr.decode())
    assert "Traceback" not in run.stderr, run.stderr
    return run


async def jobpulse_each(commands: Iterable[Sequence[str]], *, url: str) -> list[Run]:
    """Each command at the same time (they are independent); their runs in the same order."""
    runs: dict[int, Run] = {}

    async def run(index: int, args: Sequence[str]) -> None:
        runs[index] = await jobpulse(*args, url=url)

    async with anyio.create_task_group() as group:
        for index, args in enumerate(commands):
            group.start_soon(run, index, args)
    return [runs[index] for index in sorted(runs)]


def assert_one_error_line(run: Run, code: ExitCode, *fragments: str) -> None:
    assert run.code == code, run
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("jobpulse: "), run.stderr
    for fragment in fragments:
        assert fragment in run.stderr


async def drain(stream: ByteReceiveStream | None) -> str:
    assert stream is not None
    data = bytearray()
    with anyio.fail_after(10):
        while True:
            try:
                data += await stream.receive()
            except anyio.EndOfStream:
                return data.decode()


async def read_until(process: Process, pattern: str, seen: list[str]) -> None:
    """Read the process's stdout into `seen` until a line matches `pattern`."""
    assert process.stdout is not None
    buffer = ""
    with anyio.fail_after(10):
        async for chunk in TextReceiveStream(process.stdout):
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            seen.extend(lines)
            if any(re.search(pattern, line) for line in lines):
                return
    code = await process.wait()
    errors = await drain(process.stderr)
    raise AssertionError(f"stdout ended without {pattern!r} (exit {code}, stderr {errors!r}): {seen}")


async def test_submit_wait_prints_a_line_per_event_then_the_result(stack: Stack) -> None:
    run = await jobpulse("submit", "simulate", "steps=4", "interval_ms=20", "--wait", url=stack.web.url)
    assert run.code == ExitCode.OK and run.stderr == ""
    assert run.lines == [
        "status queued",
        "status running (attempt 1)",
        "25.0% step 1/4",
        "50.0% step 2/4",
        "75.0% step 3/4",
        "100.0% step 4/4",
        "status succeeded (attempt 1)",
        '{"steps": 4}',
    ]


async def test_submit_wait_json_prints_one_object_per_event(stack: Stack) -> None:
    run = await jobpulse(
        "submit", "simulate", "steps=5", "interval_ms=10", "--wait", "--json", url=stack.web.url
    )
    assert run.code == ExitCode.OK, run
    events = [json.loads(line) for line in run.lines]
    ids = [event["id"] for event in events]
    assert ids == sorted(set(ids)) and ids[0] == 1
    assert [event["event"] for event in events] == ["status", "status", *["progress"] * 5, "status"]
    assert len({event["job_id"] for event in events}) == 1
    assert events[2] == {
        "event": "progress",
        "id": 3,
        "job_id": events[0]["job_id"],
        "ts": events[2]["ts"],
        "progress": 20.0,
        "message": "step 1/5",
        "current": 1,
        "total": 5,
    }
    assert events[-1]["status"] == "succeeded" and events[-1]["result"] == {"steps": 5}


async def test_failed_job_exits_1_with_the_workers_error(stack: Stack) -> None:
    run = await jobpulse(
        "submit", "simulate", "steps=3", "interval_ms=10", "fail_at=2", "--wait", url=stack.web.url
    )
    assert_one_error_line(
        run, ExitCode.JOB_FAILED, "failed: SimulatedFailure: simulated failure at step 2 of 3"
    )
    assert run.lines[-1] == "status failed (attempt 1): SimulatedFailure: simulated failure at step 2 of 3"


async def test_cancel_from_another_process_ends_watch_with_exit_3(stack: Stack) -> None:
    submitted = await jobpulse("submit", "simulate", "steps=200", "interval_ms=50", url=stack.web.url)
    job_id = submitted.stdout.strip()
    assert submitted.code == ExitCode.OK and re.fullmatch(r"[\w-]{22}", job_id), submitted

    seen: list[str] = []
    command = [*JOBPULSE, "watch", job_id]
    async with await anyio.open_process(command, env=cli_env(JOBPULSE_URL=stack.web.url)) as watch:
        await read_until(watch, r"% step \d+/200$", seen)
        cancelled = await jobpulse("cancel", job_id, url=stack.web.url)
        assert cancelled.code == ExitCode.OK and cancelled.stdout == "cancelled\n", cancelled
        rest, error = await drain(watch.stdout), await drain(watch.stderr)
        with anyio.fail_after(10):
            assert await watch.wait() == ExitCode.JOB_CANCELLED
    assert error == f"jobpulse: job {job_id} was cancelled\n"
    assert rest.splitlines()[-1] == "status cancelled (attempt 1): cancelled by request"

    again = await jobpulse("cancel", job_id, url=stack.web.url)
    assert_one_error_line(again, ExitCode.USAGE, "(409)", "has already finished")


async def test_timeout_exits_4_and_leaves_the_job_running(stack: Stack) -> None:
    job = await stack.submit(steps=100, interval_ms=100)
    started = time.monotonic()
    run = await jobpulse("watch", job["id"], "--timeout", "0.5", url=stack.web.url)
    assert time.monotonic() - started < 5
    assert_one_error_line(run, ExitCode.TIMED_OUT, "timed out after 0.5 s", "not cancelled")
    assert (await stack.job(job["id"]))["status"] in ("queued", "running")

    run = await jobpulse(
        "submit", "simulate", "steps=100", "interval_ms=100", "--wait", "--timeout", "0.3", url=stack.web.url
    )
    assert_one_error_line(run, ExitCode.TIMED_OUT, "timed out after 0.3 s")


async def test_ctrl_c_stops_watching_with_exit_130_and_does_not_cancel(stack: Stack) -> None:
    job = await stack.submit(steps=200, interval_ms=50)
    seen: list[str] = []
    command = [*JOBPULSE, "--url", stack.web.url, "watch", job["id"]]
    async with await anyio.open_process(command, env=cli_env()) as watch:
        await read_until(watch, r"% step ", seen)
        watch.send_signal(signal.SIGINT)
        error = await drain(watch.stderr)
        with anyio.fail_after(5):
            assert await watch.wait() == ExitCode.INTERRUPTED
    assert error == f"jobpulse: stopped watching job {job['id']} (it is not cancelled)\n"
    assert (await stack.job(job["id"]))["status"] == "running"


async def test_unknown_and_malformed_ids_exit_5(stack: Stack) -> None:
    commands = [["status", UNKNOWN_ID], ["status", "not-an-id"], ["watch", UNKNOWN_ID], ["cancel", "x/../y"]]
    for run in await jobpulse_each(commands, url=stack.web.url):
        assert_one_error_line(run, ExitCode.NOT_FOUND, "not found")


async def test_usage_errors_exit_2(stack: Stack, tmp_path: Path) -> None:
    # argparse's own: the usage, then what is wrong.
    commands = [
        [],
        ["submit"],
        ["status"],
        ["submit", "simulate", "steps"],
        ["watch", "ID", "--timeout", "0"],
    ]
    runs = await jobpulse_each(commands, url=stack.web.url)
    for args, run in zip(commands, runs, strict=True):
        assert run.code == ExitCode.USAGE and "usage: jobpulse" in run.stderr, (args, run)
    assert "argument KEY=VALUE: 'steps' is not KEY=VALUE (e.g. steps=20 or name=ada)" in runs[3].stderr
    assert "argument --timeout: '0' is not a number of seconds above 0" in runs[4].stderr

    # Ours and the server's (any 4xx but 404): one line saying what is wrong.
    cases = {
        ("submit", "nope", "steps=1"): ["(422)", "Unknown task 'nope'; tasks you can submit here: simulate"],
        ("submit", "simulate", "steps=many"): [
            "params.steps: Input should be a valid integer",
            "interval_ms",
        ],
        ("submit", "simulate", "steps=1", "steps=2"): ["'steps' is given twice"],
        ("submit", "simulate", "steps=1", "interval_ms=0", "--timeout", "5"): ["add --wait"],
        ("upload", str(tmp_path / "missing.txt")): ["missing.txt is not a file"],
        ("status", UNKNOWN_ID, "--url", "localhost:8000"): ["must be an http(s) URL"],
    }
    for fragments, run in zip(cases.values(), await jobpulse_each(cases, url=stack.web.url), strict=True):
        assert_one_error_line(run, ExitCode.USAGE, *fragments)


async def test_server_unreachable_exits_6_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    commands = [["status", UNKNOWN_ID], ["submit", "simulate", "steps=1", "--wait"], ["watch", UNKNOWN_ID]]
    # "At once": no retrying, so no slower than the same processes asking nothing of the server. Measured
    # beside them rather than against a fixed time, which a busy machine (the suite runs in two processes)
    # spends on starting the interpreters alone.
    started = time.monotonic()
    for run in await jobpulse_each([[args[0], "--help"] for args in commands], url=url):
        assert run.code == ExitCode.OK, run
    asking_nothing_s = time.monotonic() - started
    started = time.monotonic()
    for run in await jobpulse_each(commands, url=url):
        assert_one_error_line(run, ExitCode.UNREACHABLE, f"cannot reach the server at {url}/", "refused")
    unreachable_s = time.monotonic() - started
    assert unreachable_s < asking_nothing_s + 2, (unreachable_s, asking_nothing_s)


async def test_status_shows_a_summary_or_the_job_as_json(stack: Stack) -> None:
    job = await stack.submit(steps=2, interval_ms=0)
    await stack.client.get(f"/jobs/{job['id']}", params={"wait": 10})

    run = await jobpulse("status", job["id"], "--json", url=stack.web.url)
    assert run.code == ExitCode.OK and json.loads(run.stdout) == await stack.job(job["id"])

    run = await jobpulse("status", job["id"], url=stack.web.url)
    assert run.code == ExitCode.OK
    assert run.lines == [
        f"job       {job['id']} (simulate)",
        "status    succeeded (attempt 1)",
        "progress  100.0%  2/2  step 2/2",
        'result    {"steps": 2}',
    ]


async def test_upload_wait_prints_the_files_facts(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("one\ntwo\nthree\n")
    run = await jobpulse("upload", str(path), "--wait", url=stack.web.url)
    assert run.code == ExitCode.OK, run
    result = json.loads(run.lines[-1])
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["filename"] == "notes.txt" and result["lines"] == 3

    run = await jobpulse("upload", str(path), "--json", "--filename", "shown.txt", url=stack.web.url)
    job = json.loads(run.stdout)
    assert run.code == ExitCode.OK and job["task"] == "process_upload" and job["status"] == "queued"


async def test_url_comes_from_jobpulse_url(stack: Stack) -> None:
    run = await jobpulse(
        "submit", "simulate", "steps=1", "interval_ms=0", env=cli_env(JOBPULSE_URL=stack.web.url)
    )
    assert run.code == ExitCode.OK, run
    assert (await stack.job(run.stdout.strip()))["task"] == "simulate"

    # --url wins, before or after the command.
    unreachable = cli_env(JOBPULSE_URL=f"http://127.0.0.1:{free_port()}")
    for args in (
        ["--url", stack.web.url, "status", run.stdout.strip()],
        ["status", run.stdout.strip(), "--url", stack.web.url],
    ):
        assert (await jobpulse(*args, env=unreachable)).code == ExitCode.OK


async def run_in_terminal(args: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    """Run under a pseudo-terminal 100 columns wide: what a person at a terminal sees, escapes included."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    output = bytearray()

    def read_all() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child is gone and the terminal closed
                return
            if not chunk:
                return
            output.extend(chunk)

    try:
        with anyio.fail_after(30):
            process = await anyio.open_process(args, stdin=slave, stdout=slave, stderr=slave, env=dict(env))
            os.close(slave)
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.to_thread.run_sync, read_all)
                code = await process.wait()
    finally:
        os.close(master)
    return code, output.decode(errors="replace")


async def test_terminal_shows_a_live_bar_with_rate_and_eta(stack: Stack) -> None:
    args = [*JOBPULSE, "submit", "simulate", "steps=12", "interval_ms=100", "--wait"]
    code, screen = await run_in_terminal(args, cli_env(JOBPULSE_URL=stack.web.url, TERM="xterm-256color"))
    assert code == ExitCode.OK, screen
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # without colours and cursor moves
    assert re.search(r"job [\w-]{22} \(simulate\)", text)
    assert re.search(r"running +━+.* +\d+\.\d% step \d+/12 \d+\.\d/s ETA 0:00:0\d", text), text
    assert re.search(r"✓ succeeded +━+ 100\.0% step 12/12 +took 0:00:0\d", text), text
    assert '"steps": 12' in text

    # TTY_INTERACTIVE=1 asks for the bar through a pipe too; 0 for lines on a terminal.
    job = await stack.submit(steps=1, interval_ms=0)
    run = await jobpulse("watch", job["id"], url=stack.web.url, env=cli_env(TTY_INTERACTIVE="1"))
    assert run.code == ExitCode.OK and "━" in run.stdout and "✓ succeeded" in run.stdout
    code, screen = await run_in_terminal(
        [*JOBPULSE, "--url", stack.web.url, "watch", job["id"]], cli_env(TTY_INTERACTIVE="0")
    )
    assert code == ExitCode.OK and "status succeeded (attempt 1)\r\n" in screen and "━" not in screen


def test_key_value_takes_json_else_text() -> None:
    assert parse_param("steps=20") == ("steps", 20)
    assert parse_param("flag=true") == ("flag", True)
    assert parse_param("x=null") == ("x", None)
    assert parse_param("ratio=0.5") == ("ratio", 0.5)
    assert parse_param("name=ada") == ("name", "ada")
    assert parse_param("tags=[1, 2]") == ("tags", [1, 2])
    assert parse_param('quoted="20"') == ("quoted", "20")
    assert parse_param("expr=a=b") == ("expr", "a=b")
    assert parse_param("empty=") == ("empty", "")
    for bad in ("steps", "=5", ""):
        with pytest.raises(Exception, match="is not KEY=VALUE"):
            parse_param(bad)


def test_rate_and_eta_come_from_the_events_own_clock() -> None:
    estimate = RateEstimator()

    def event(ts: float, current: int | None = None, progress: float = 0.0) -> ProgressEvent:
        return ProgressEvent(job_id="j", ts=ts, progress=progress, current=current, total=current and 20)

    estimate.add(event(100.0, current=1))
    estimate.add(event(100.2, current=2))
    assert estimate.rate is None  # too short a span to tell
    estimate.add(event(101.0, current=5))
    assert estimate.rate == pytest.approx(4.0) and estimate.remaining_s == pytest.approx(3.75)
    estimate.add(event(102.0, current=2))  # went backwards: a retry started over
    assert estimate.rate is None

    percent = RateEstimator()
    percent.add(event(10.0, progress=10.0))
    percent.add(event(12.0, progress=30.0))
    assert percent.rate == pytest.approx(10.0) and percent.remaining_s == pytest.approx(7.0)

    sliding = RateEstimator(window_s=10.0)  # 1 %/s for 10 s, then 3 %/s: the last 10 s count
    for second in range(21):
        sliding.add(event(float(second), progress=second if second <= 10 else 10 + 3 * (second - 10)))
    assert sliding.rate == pytest.approx(3.0)


def test_help_documents_the_exit_codes() -> None:
    import subprocess

    help_text = subprocess.run([*JOBPULSE, "--help"], capture_output=True, text=True, check=True).stdout
    for code in ExitCode:
        assert re.search(rf"^  {code.value} +{re.escape(code.meaning)}", help_text, flags=re.MULTILINE), code


@pytest.mark.slow
async def test_up_runs_the_whole_system_till_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in cli_env().items() if k != "REDIS_URL"}
    env["JOBPULSE_UPLOAD_DIR"] = str(tmp_path / "uploads")
    log = tmp_path / "up.log"
    command = [*JOBPULSE, "up", "--port", str(port), "--data", str(tmp_path / "redis")]
    with log.open("wb") as out:
        process = await anyio.open_process(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        async with httpx.AsyncClient() as client:
            with anyio.fail_after(30):
                while True:
                    assert process.returncode is None, log.read_text()
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/openapi.json")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await anyio.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            code = await process.wait()
    output = log.read_text()
    assert code == 0, output
    assert "started a private Redis" in output and "jobpulse: stopped" in output
