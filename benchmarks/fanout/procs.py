"""Processes the benchmark starts and what it reads about them: CPU seconds and memory from /proc."""

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from jobpulse.stack.processes import stop_process

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    """Raise our soft open-files limit to the hard one; children inherit it. Returns the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def split_cpus() -> tuple[set[int], set[int]] | None:
    """One CPU for the web process alone, and the rest for everything else; None with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of `pid` on `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included), from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15)


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class Child:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout_s: float = 10) -> None:
        stop_process(self.popen, timeout_s)

    def log_problems(self) -> list[str]:
        """Lines of its log that look like errors or warnings."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        words = ("Traceback", "ERROR", "WARNING", "Error", "error:")
        return [line for line in lines if any(word in line for word in words)]


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def uvicorn_args(app: str, port: int) -> list[str]:
    args = ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
    args += ["--backlog", "4096", "--timeout-graceful-shutdown", "2"]
    if has_module("uvloop"):
        args += ["--loop", "uvloop"]
    if has_module("httptools"):
        args += ["--http", "httptools"]
    return python_module("uvicorn", app, *args)


def wait_for_http(port: int, child: Child, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited at start:\n{child.log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not answer on port {port} within {timeout_s} s")
