"""Two web processes and two arq workers as real processes, on whatever Redis their environment names:
the scale-out tests' fleet (one Redis in tests/integration, a cluster in tests/cluster)."""

import re
import time
from pathlib import Path

from tests.support.processes import Process, wait_until_serving, web_process, worker_process


class Fleet:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[Process] = []
        self.webs: list[tuple[Process, str]] = []
        self.workers: list[Process] = []

    @property
    def urls(self) -> list[str]:
        return [url for _, url in self.webs]

    def start(self) -> None:
        # Start all four, then wait: they come up side by side.
        self.workers = [self._start(worker_process(self.env, self.logs / f"worker{n}.log")) for n in (1, 2)]
        for n in (1, 2):
            process, url = web_process(self.env, self.logs / f"web{n}.log")
            self.webs.append((self._start(process), url))
        for process, url in self.webs:
            wait_until_serving(url, process)
        for worker in self.workers:
            wait_until_working(worker)

    def _start(self, process: Process) -> Process:
        self.started.append(process.start())
        return process

    def stop(self) -> None:
        for process in self.started:
            process.stop()


def wait_until_working(worker: Process, timeout: float = 20) -> None:
    """arq logs Redis's facts once it has connected, just before it starts polling the queue."""
    deadline = time.monotonic() + timeout
    while "redis_version=" not in worker.output():
        assert worker.popen is not None and worker.popen.poll() is None, worker.output()
        assert time.monotonic() < deadline, f"worker did not start: {worker.output()}"
        time.sleep(0.05)


def jobs_run_by(worker: Process) -> list[str]:
    """The job ids this worker started, from arq's log line `  0.05s → <job id>:simulate(...)`."""
    return re.findall(r"→ (\S+?):simulate\(", worker.output())
