"""`progress_reporter(ctx)`: progress from code that is not on the worker's event loop.

```python
report = progress_reporter(ctx)  # in the task, on the event loop
await asyncio.to_thread(resize_all, images, report)  # or loop.run_in_executor(process_pool, ...)

def resize_all(images, report):  # in the thread, or the pool's process
    for i, image in enumerate(images, 1):
        resize(image)
        report(current=i, total=len(images))  # JobAborted once the job is cancelled: let it propagate
```

A report waits until the worker's event loop has it (a round trip of about 0.1 ms, from a thread or
from another process), then coalesces there exactly as `progress()` does. It raises
`JobAborted` once the attempt is over: cancelled, handed to another attempt, ended, or its worker gone
(a process whose worker stopped or died cannot publish anything more for it either).
"""

import asyncio
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from jobpulse.worker.progress import REPORTER_KEY, JobAborted, ProgressReporter, Update, build_update
from jobpulse.worker.report_relay import ABORTED, OK, RELAY_KEY, ReportRelay, encode_report, relay_for


class Report:
    """`report(percent=None, message=None, *, current=None, total=None)`, from any thread or process.

    Pickles as where to reach the worker (its relay's Unix socket and token) and which attempt it reports
    for; the ProgressReporter it ends in never leaves the worker's process.
    """

    def __init__(self, address: str, token: str, job_id: str, attempt: int, pid: int) -> None:
        self._address, self._token = address, token
        self._job_id, self._attempt = job_id, attempt
        self._pid = pid  # the worker's: in its process, reports go straight to its loop

    def __call__(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        update = build_update(percent, message, current, total, caller="report()")
        if os.getpid() == self._pid:
            relay = relay_for(self._address)
            if relay is None:  # the worker has shut down
                raise JobAborted(self._job_id)
            relay.deliver_threadsafe(self._job_id, self._attempt, update)
        else:
            _link(self._address, self._token).send(self._job_id, self._attempt, update)

    def __repr__(self) -> str:
        return f"<progress report for job {self._job_id} attempt {self._attempt}>"


def progress_reporter(ctx: Mapping[str, Any]) -> Report:
    """A callable that reports this attempt's progress from a thread or a process: see the module doc.

    Call it in the task, on the worker's event loop, and hand the result to the thread or process.
    """
    reporter: ProgressReporter | None = ctx.get(REPORTER_KEY)
    relay: ReportRelay | None = ctx.get(RELAY_KEY)
    if reporter is None or relay is None:
        raise RuntimeError(
            "progress_reporter() needs the ctx arq passes to a jobpulse task (see jobpulse.worker_settings)"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "call progress_reporter(ctx) in the task, on the event loop, and pass what it returns to the "
            "thread or process"
        ) from None
    relay.register(reporter)
    return Report(relay.address, relay.token, reporter.job_id, reporter.attempt, os.getpid())


class _Link:
    """A process's connection to one worker's relay, shared by its threads one report at a time."""

    def __init__(self, address: str, token: str) -> None:
        self._address, self._token = address, token
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def send(self, job_id: str, attempt: int, update: Update) -> None:
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.sendall(encode_report(job_id, attempt, update))
                answer = self._read_line(self._sock)
            except OSError as exc:
                self._drop()
                aborted = JobAborted(job_id)
                aborted.add_note(f"the worker's progress relay at {self._address} is gone: {exc}")
                raise aborted from exc
        if answer == OK:
            return
        if answer == ABORTED:
            raise JobAborted(job_id)
        raise RuntimeError(f"the worker could not publish this progress: {answer.decode(errors='replace')}")

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._address)
            sock.sendall(self._token.encode() + b"\n")
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _read_line(sock: socket.socket) -> bytes:
        # Answers are short and one at a time: read to the newline, byte runs at once.
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                raise ConnectionResetError("the worker closed the connection")
            line += chunk
        return line[:-1]

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_links: dict[str, _Link] = {}
_links_lock = threading.Lock()


def _link(address: str, token: str) -> _Link:
    with _links_lock:
        link = _links.get(address)
        if link is None:
            link = _links[address] = _Link(address, token)
        return link


def _forget_links() -> None:
    """In a forked child: the parent's connections and locks are not this process's to use."""
    global _links_lock
    _links.clear()
    _links_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_links)
