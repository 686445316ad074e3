"""The real entry points as child processes: `arq worker.WorkerSettings` and `uvicorn web.app:app`."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jobpulse.stack.processes import stop_process
from jobpulse.stack.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.cwd = cwd  # the checkout by default: where `web.app:app` and `worker.WorkerSettings` live
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> "Process":
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen, 10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# Every test's client is 127.0.0.1, and the session's Redis outlives a test: per-client limits would
# carry over from one test to the next. The tests of the limits set their own.
NO_CLIENT_LIMITS = {"JOBPULSE_SUBMISSIONS_PER_MINUTE": "0", "JOBPULSE_MAX_STREAMS_PER_CLIENT": "0"}


def process_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    return {**env, **NO_CLIENT_LIMITS, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **extra}


def worker_process(env: dict[str, str], log: Path) -> Process:
    return Process([sys.executable, "-m", "arq", "worker.WorkerSettings"], env, log)


def web_process(env: dict[str, str], log: Path, port: int | None = None) -> tuple[Process, str]:
    """`uvicorn web.app:app` exactly as the README starts it: no graceful-shutdown timeout."""
    port = port or free_port()
    args = [sys.executable, "-m", "uvicorn", "web.app:app", "--port", str(port)]
    return Process(args, env, log), f"http://127.0.0.1:{port}"


def wait_until_serving(url: str, process: Process, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.popen is not None and process.popen.poll() is None, process.output()
        try:
            if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"web did not start: {process.output()}")
