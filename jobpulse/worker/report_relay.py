"""The worker's end of `progress_reporter()`: hands reports from threads and processes to the attempt's
`ProgressReporter`, on the worker's event loop.

Every report ends in the same `ProgressReporter.report()` that `progress()` awaits, so coalescing,
ordering, fencing and "pending progress is flushed before the terminal status" are `progress()`'s.
A thread of the worker's process reaches it with `run_coroutine_threadsafe`; another process (a
`ProcessPoolExecutor`'s, forked or spawned) through one Unix socket per worker, in a private temp dir,
opened on the first `progress_reporter()` call and removed at worker shutdown.

The wire format is one JSON object per line, so nothing from another process is ever unpickled:
the client's first line is the relay's token; then each request is a report
(`{"job_id", "attempt", "progress", "message", "current", "total", "ts"}`) and each answer one line:
`ok`, `aborted` (the attempt is over: JobAborted), or `error <text>` (publishing failed).
"""

import asyncio
import concurrent.futures
import hmac
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import weakref
from typing import Any

from jobpulse.worker.progress import JobAborted, ProgressReporter, Update, build_update

logger = logging.getLogger(__name__)

RELAY_KEY = "jobpulse_report_relay"

OK, ABORTED, ERROR = b"ok", b"aborted", b"error"
_LINE_LIMIT = 1 << 20  # a report with a longer message is refused (the connection is dropped)
_CLOSE_WAIT_S = 5  # for a report being published when the worker shuts down

# Relays of this process by address, for a report unpickled in the process it was made in.
_relays: "weakref.WeakValueDictionary[str, ReportRelay]" = weakref.WeakValueDictionary()


def encode_report(job_id: str, attempt: int, update: Update) -> bytes:
    fields = {
        "job_id": job_id,
        "attempt": attempt,
        "progress": update.progress,
        "message": update.message,
        "current": update.current,
        "total": update.total,
        "ts": update.ts,
    }
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def decode_report(line: bytes) -> tuple[str, int, Update]:
    """The job id, attempt and update of a request line, validated as `progress()` validates its own."""
    fields: dict[str, Any] = json.loads(line)
    job_id, attempt, ts = fields["job_id"], fields["attempt"], fields["ts"]
    if not isinstance(job_id, str) or not isinstance(attempt, int) or not isinstance(ts, int | float):
        raise ValueError("malformed report")
    update = build_update(
        fields["progress"], fields["message"], fields["current"], fields["total"], caller="report()", ts=ts
    )
    return job_id, attempt, update


def relay_for(address: str) -> "ReportRelay | None":
    """This process's relay at `address`, if it is still open."""
    relay = _relays.get(address)
    return relay if relay is not None and not relay.closed else None


class ReportRelay:
    """One worker's relay: its attempts' reporters by (job id, attempt), and the socket processes use."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(32)
        self._reporters: weakref.WeakValueDictionary[tuple[str, int], ProgressReporter] = (
            weakref.WeakValueDictionary()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._dir: str | None = None
        self._address: str | None = None
        self._serving: asyncio.Task[asyncio.Server] | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.closed = False

    @property
    def address(self) -> str:
        if self._address is None:
            raise RuntimeError("the report relay has not started")
        return self._address

    def register(self, reporter: ProgressReporter) -> None:
        """Make `reporter` reachable from threads and processes; starts the relay (on the event loop)."""
        if self.closed:
            raise RuntimeError("the worker is shutting down: no new progress reporters")
        self._start()
        self._reporters[(reporter.job_id, reporter.attempt)] = reporter

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not None:
            if loop is not self._loop:
                raise RuntimeError("progress_reporter(ctx) runs on the worker's event loop, in the task")
            return
        self._dir = tempfile.mkdtemp(prefix="jobpulse-reports-")  # mode 0700: this user's only
        address = os.path.join(self._dir, "relay.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(128)  # connections wait here until the server below accepts them
        except BaseException:
            sock.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        sock.setblocking(False)
        self._loop, self._loop_thread, self._address = loop, threading.get_ident(), address
        self._serving = loop.create_task(
            asyncio.start_unix_server(self._serve, sock=sock, limit=_LINE_LIMIT), name="jobpulse-report-relay"
        )
        _relays[address] = self

    def deliver_threadsafe(self, job_id: str, attempt: int, update: Update) -> None:
        """Hands `update` to its reporter from a thread other than the loop's; waits until it has it."""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                "report() was called on the worker's event loop, which it would block: "
                "use await progress(ctx, ...) on the event loop"
            )
        loop = self._loop
        if self.closed or loop is None or loop.is_closed():
            raise JobAborted(job_id)
        delivery = self.deliver(job_id, attempt, update)
        try:
            future = asyncio.run_coroutine_threadsafe(delivery, loop)
        except RuntimeError:  # the loop closed meanwhile
            delivery.close()
            raise JobAborted(job_id) from None
        try:
            future.result()
        except concurrent.futures.CancelledError:  # the worker's loop went away
            raise JobAborted(job_id) from None

    async def deliver(self, job_id: str, attempt: int, update: Update) -> None:
        """Reports `update` to the attempt's reporter; `JobAborted` if that attempt is over."""
        reporter = self._reporters.get((job_id, attempt))
        if reporter is None:
            raise JobAborted(job_id)
        await reporter.report(update)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            if hmac.compare_digest((await reader.readline()).strip(), self.token.encode()):
                while line := await reader.readline():
                    writer.write(await self._answer(line) + b"\n")
                    await writer.drain()
        except (ConnectionError, ValueError):
            pass  # the other process went away, or sent a line over the limit
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _answer(self, line: bytes) -> bytes:
        try:
            job_id, attempt, update = decode_report(line)
        except (ValueError, TypeError, KeyError) as exc:
            return ERROR + b" " + f"{type(exc).__name__}: {exc}".encode()
        try:
            await self.deliver(job_id, attempt, update)
        except JobAborted:
            return ABORTED
        except Exception as exc:
            logger.exception("job %s: publishing progress from another process failed", job_id)
            return ERROR + b" " + f"{type(exc).__name__}: {exc}".encode()
        return OK

    async def close(self) -> None:
        """Stop relaying, at worker shutdown: every later report raises JobAborted."""
        self.closed = True
        serving, self._serving = self._serving, None
        if self._address is None or serving is None:
            return
        _relays.pop(self._address, None)
        try:
            os.unlink(self._address)  # first: a forked child may still hold the listening socket open
        except FileNotFoundError:
            pass
        server = await serving
        server.close()
        # Closing a connection ends its handler at its next read, after any report it is publishing.
        for writer in self._connections.values():
            writer.close()
        if self._connections:
            _, stuck = await asyncio.wait(list(self._connections), timeout=_CLOSE_WAIT_S)
            for task in stuck:
                task.cancel()
        await server.wait_closed()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
