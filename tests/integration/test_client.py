"""jobpulse.client against real stacks: uvicorn, arq and Redis, in this event loop or as child processes.

Every behaviour is checked for `Client` and `AsyncClient` alike (the `client` fixture is parametrized).
The server runs in the test's own event loop, so the blocking `Client` is always called from a worker
thread; calling it from the test directly would block the very loop that has to answer it.
"""

import asyncio
import json
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
from pydantic import JsonValue, SecretStr

from jobpulse.client import (
    AsyncClient,
    Client,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobNotFound,
    RequestRejected,
    ServerUnavailable,
    WaitTimeout,
)
from jobpulse.models import JobView, LostEvent, ProgressEvent, StatusEvent, SubmittedJob
from jobpulse.stack.redis_server import RedisServer, free_port
from jobpulse.status import JobStatus
from tests.conftest import Stack, StackFactory
from tests.support.processes import Process, process_env, wait_until_serving, web_process, worker_process
from tests.support.tcp_proxy import FreezableProxy

pytestmark = pytest.mark.anyio

T = TypeVar("T")


# --- One interface over both clients ---------------------------------------------------------------------


class Driver:
    """The calls the tests make, as coroutines, whichever client is underneath."""

    kind: str

    async def submit(self, task: str = "simulate", **params: Any) -> JobView:
        raise NotImplementedError

    async def upload(self, path: Path, *, filename: str | None = None) -> JobView:
        raise NotImplementedError

    async def get(self, job_id: str, *, wait: float | None = None) -> JobView:
        raise NotImplementedError

    async def cancel(self, job_id: str) -> JobView:
        raise NotImplementedError

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
    ) -> JsonValue:
        raise NotImplementedError

    async def events(
        self, job_id: str, *, last_event_id: int | None = None, limit: int | None = None
    ) -> tuple[list[JobEvent], list[int]]:
        """The events, and the stream's `last_event_id` after each."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class SyncDriver(Driver):
    kind = "sync"

    def __init__(self, client: Client) -> None:
        self.client = client

    async def _call(self, function: Callable[[Client], T]) -> T:
        return await anyio.to_thread.run_sync(lambda: function(self.client))

    async def submit(self, task: str = "simulate", **params: Any) -> JobView:
        return await self._call(lambda c: c.submit(task, **params))

    async def upload(self, path: Path, *, filename: str | None = None) -> JobView:
        return await self._call(lambda c: c.upload(path, filename=filename))

    async def get(self, job_id: str, *, wait: float | None = None) -> JobView:
        return await self._call(lambda c: c.get(job_id, wait=wait))

    async def cancel(self, job_id: str) -> JobView:
        return await self._call(lambda c: c.cancel(job_id))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
    ) -> JsonValue:
        return await self._call(lambda c: c.wait(job_id, timeout=timeout, on_progress=on_progress))

    async def events(
        self, job_id: str, *, last_event_id: int | None = None, limit: int | None = None
    ) -> tuple[list[JobEvent], list[int]]:
        def read(client: Client) -> tuple[list[JobEvent], list[int]]:
            events: list[JobEvent] = []
            ids: list[int] = []
            with client.events(job_id, last_event_id=last_event_id) as stream:
                for event in stream:
                    events.append(event)
                    ids.append(stream.last_event_id)
                    if len(events) == limit:
                        break
            return events, ids

        return await self._call(read)

    async def close(self) -> None:
        self.client.close()


class AsyncDriver(Driver):
    kind = "async"

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def submit(self, task: str = "simulate", **params: Any) -> JobView:
        return await self.client.submit(task, **params)

    async def upload(self, path: Path, *, filename: str | None = None) -> JobView:
        return await self.client.upload(path, filename=filename)

    async def get(self, job_id: str, *, wait: float | None = None) -> JobView:
        return await self.client.get(job_id, wait=wait)

    async def cancel(self, job_id: str) -> JobView:
        return await self.client.cancel(job_id)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
    ) -> JsonValue:
        return await self.client.wait(job_id, timeout=timeout, on_progress=on_progress)

    async def events(
        self, job_id: str, *, last_event_id: int | None = None, limit: int | None = None
    ) -> tuple[list[JobEvent], list[int]]:
        events: list[JobEvent] = []
        ids: list[int] = []
        async with self.client.events(job_id, last_event_id=last_event_id) as stream:
            async for event in stream:
                events.append(event)
                ids.append(stream.last_event_id)
                if len(events) == limit:
                    break
        return events, ids

    async def close(self) -> None:
        await self.client.aclose()


ClientFactory = Callable[..., Driver]


@pytest.fixture(params=["sync", "async"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[ClientFactory]:
    """`connect(url, **options)`: a client of this test's kind, closed when the test ends."""
    drivers: list[Driver] = []

    def make(base_url: str | None = None, **options: Any) -> Driver:
        driver: Driver
        if request.param == "sync":
            driver = SyncDriver(Client(base_url, **options))
        else:
            driver = AsyncDriver(AsyncClient(base_url, **options))
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        await driver.close()


@dataclass
class Progress:
    """An `on_progress` callback that records what it was given (from whichever thread calls it)."""

    events: list[ProgressEvent] = field(default_factory=list)

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    @property
    def steps(self) -> list[int | None]:
        return [event.current for event in self.events]


async def until(predicate: Callable[[], Any], *, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    """Every progress step is an event (no coalescing), so the tests can expect each one."""
    return await make_stack(progress_interval_ms=0)


# --- Waiting for an outcome ------------------------------------------------------------------------------


async def test_wait_returns_the_result_after_every_progress_event_in_order(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=5, interval_ms=10)
    progress = Progress()
    assert await client.wait(job.id, timeout=20, on_progress=progress) == {"steps": 5}
    assert progress.steps == [1, 2, 3, 4, 5]
    assert [event.progress for event in progress.events] == [20, 40, 60, 80, 100]
    assert (await client.get(job.id)).status == "succeeded"


async def test_async_wait_also_takes_a_coroutine_function_as_on_progress(stack: Stack) -> None:
    seen: list[int | None] = []

    async def on_progress(event: ProgressEvent) -> None:
        await anyio.sleep(0)
        seen.append(event.current)

    async with AsyncClient(stack.web.url) as client:
        job = await client.submit("simulate", steps=3, interval_ms=0)
        assert await client.wait(job.id, timeout=10, on_progress=on_progress) == {"steps": 3}
    assert seen == [1, 2, 3]


async def test_wait_on_a_failing_job_raises_job_failed_with_the_workers_error(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=5, interval_ms=10, fail_at=3)
    with pytest.raises(JobFailed) as failed:
        await client.wait(job.id, timeout=20)
    assert failed.value.job_id == job.id
    assert failed.value.error == "SimulatedFailure: simulated failure at step 3 of 5"
    assert failed.value.attempt == 1


async def test_wait_on_a_job_cancelled_by_another_request_raises_job_cancelled(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=200, interval_ms=50)
    raised: list[BaseException] = []

    async def wait() -> None:
        with pytest.raises(JobCancelled) as cancelled:
            await client.wait(job.id, timeout=20)
        raised.append(cancelled.value)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await until(lambda: _progress_above(stack, job.id, 0))
        assert (await client.cancel(job.id)).status == "cancelled"
    [error] = raised
    assert isinstance(error, JobCancelled)
    assert (error.job_id, error.error) == (job.id, "cancelled by request")


async def _progress_above(stack: Stack, job_id: str, percent: float) -> bool:
    progress: float = (await stack.job(job_id))["progress"]
    return progress > percent


async def test_wait_timeout_is_raised_on_time_while_events_flow(stack: Stack, connect: ClientFactory) -> None:
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=400, interval_ms=20)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        await client.wait(job.id, timeout=0.6)
    assert 0.6 <= time.monotonic() - started < 1.5
    assert (timed_out.value.job_id, timed_out.value.timeout) == (job.id, 0.6)


async def test_wait_timeout_wakes_a_read_blocked_on_a_stream_gone_quiet(
    make_stack: StackFactory, connect: ClientFactory
) -> None:
    """Events for most of the timeout, then silence (the next keep-alive is 15 s away).

    A read timeout set when the stream opened would wake only one full timeout after the last event;
    the deadline must cut the blocked read itself.
    """
    stack = await make_stack(with_worker=False)
    store = stack.web.services.store
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=1, interval_ms=0)
    progress = Progress()
    started = time.monotonic()
    async with anyio.create_task_group() as tasks:

        async def wait() -> None:
            with pytest.raises(WaitTimeout):
                await client.wait(job.id, timeout=2.0, on_progress=progress)

        tasks.start_soon(wait)
        await store.set_status(job.id, JobStatus.RUNNING, attempt=1)
        for step in range(1, 8):
            await anyio.sleep(0.2)
            await store.set_progress(job.id, attempt=1, progress=step, current=step)
    # Events until 1.4 s, then silence: cut at the deadline, 2 s; woken only by a read timeout set when the
    # stream opened, 3.4 s. The margin between them leaves room for a loaded machine.
    assert 2.0 <= time.monotonic() - started < 2.9
    assert progress.steps == list(range(1, 8))


async def test_wait_on_a_job_that_has_already_ended_returns_at_once(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=3, interval_ms=0)
    await client.get(job.id, wait=10)
    progress = Progress()
    assert await client.wait(job.id, timeout=5, on_progress=progress) == {"steps": 3}
    assert progress.steps == [1, 2, 3]  # the history, replayed


# --- The event stream ------------------------------------------------------------------------------------


async def _finished_job(stack: Stack, client: Driver, **params: Any) -> JobView:
    job = await client.submit("simulate", **{"steps": 5, "interval_ms": 0, **params})
    with anyio.fail_after(10):
        while not (view := await client.get(job.id, wait=5)).status.is_terminal:
            pass
    return view


async def test_events_are_every_event_once_in_order_with_their_ids(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    job = await _finished_job(stack, client)
    events, ids = await client.events(job.id)
    assert ids == list(range(1, 9)) == list(range(1, job.last_event_id + 1))
    assert [type(event) for event in events] == [StatusEvent] * 2 + [ProgressEvent] * 5 + [StatusEvent]
    assert isinstance(events[-1], StatusEvent)
    assert (events[-1].status, events[-1].result) == ("succeeded", {"steps": 5})


async def test_events_resume_after_last_event_id_without_repeating(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=20, interval_ms=20)
    first, first_ids = await client.events(job.id, limit=6)
    rest, rest_ids = await client.events(job.id, last_event_id=first_ids[-1])
    assert first_ids + rest_ids == list(range(1, 24))
    steps = [event.current for event in first + rest if isinstance(event, ProgressEvent)]
    assert steps == list(range(1, 21))


async def test_events_after_the_terminal_event_end_at_once_with_the_terminal_status(
    stack: Stack, connect: ClientFactory
) -> None:
    """The server answers 204; the client turns the job's state into the terminal event it stands for."""
    client = connect(stack.web.url)
    job = await _finished_job(stack, client)
    assert job.finished_at is not None
    events, ids = await client.events(job.id, last_event_id=job.last_event_id)
    assert ids == [job.last_event_id]
    [terminal] = events
    assert terminal == StatusEvent(
        job_id=job.id,
        ts=job.finished_at.timestamp(),
        status=JobStatus.SUCCEEDED,
        attempt=1,
        result={"steps": 5},
    )

    failed = await _finished_job(stack, client, fail_at=2)
    [terminal], _ = await client.events(failed.id, last_event_id=failed.last_event_id)
    assert isinstance(terminal, StatusEvent)
    assert (terminal.status, terminal.error) == (
        "failed",
        "SimulatedFailure: simulated failure at step 2 of 5",
    )


async def test_events_resuming_after_trimmed_history_yield_a_lost_event_first(
    make_stack: StackFactory, connect: ClientFactory
) -> None:
    stack = await make_stack(stream_maxlen=10, progress_interval_ms=0)
    client = connect(stack.web.url)
    job = await _finished_job(stack, client, steps=30)
    events, ids = await client.events(job.id, last_event_id=2)
    lost = events[0]
    assert isinstance(lost, LostEvent)
    assert lost.last_event_id == 2 and lost.job.status == "succeeded"
    assert ids == [2, *range(lost.first_retained_id, job.last_event_id + 1)]  # `lost` has no id of its own
    assert await client.wait(job.id, timeout=5) == {"steps": 30}  # wait() starts at what is retained


async def test_events_of_an_unknown_job_and_a_bad_resume_point_raise(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    with pytest.raises(JobNotFound) as not_found:
        await client.events("no-such-job")
    assert not_found.value.job_id == "no-such-job"
    job = await _finished_job(stack, client)
    with pytest.raises(RequestRejected) as rejected:
        await client.events(job.id, last_event_id=job.last_event_id + 1)
    assert rejected.value.status == 400
    assert "ahead of this job's newest event" in rejected.value.detail


# --- Plain requests --------------------------------------------------------------------------------------


async def test_unknown_jobs_raise_job_not_found(stack: Stack, connect: ClientFactory) -> None:
    client = connect(stack.web.url)
    for call in (client.get, client.cancel, client.wait):
        with pytest.raises(JobNotFound) as not_found:
            await call("AAAAAAAAAAAAAAAAAAAAAA")
        assert not_found.value.job_id == "AAAAAAAAAAAAAAAAAAAAAA"


async def test_requests_the_server_refuses_raise_request_rejected_with_its_detail(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    with pytest.raises(RequestRejected) as unknown_task:
        await client.submit("no_such_task", steps=1)
    assert unknown_task.value.status == 422
    assert unknown_task.value.detail[0]["type"] == "unknown_task"
    assert "Unknown task 'no_such_task'" in str(unknown_task.value)

    with pytest.raises(RequestRejected) as bad_params:
        await client.submit("simulate", steps=0, interval_ms=0)
    assert bad_params.value.status == 422
    assert bad_params.value.detail[0]["loc"] == ["body", "params", "steps"]

    job = await _finished_job(stack, client)
    with pytest.raises(RequestRejected) as finished:
        await client.cancel(job.id)
    assert finished.value.status == 409


async def test_get_with_wait_holds_the_answer_until_the_job_ends(
    stack: Stack, connect: ClientFactory
) -> None:
    client = connect(stack.web.url)
    job = await client.submit("simulate", steps=10, interval_ms=50)
    started = time.monotonic()
    view = await client.get(job.id, wait=10)
    assert view.status == "succeeded" and view.result == {"steps": 10}
    assert time.monotonic() - started < 5


async def test_upload_streams_a_file_and_starts_its_job(
    make_stack: StackFactory, connect: ClientFactory, tmp_path: Path
) -> None:
    stack = await make_stack(max_upload_bytes=1000)
    client = connect(stack.web.url)
    path = tmp_path / "data.bin"
    path.write_bytes(b"id,name\n1,a\n2,b\n")
    job = await client.upload(path, filename='my "table".csv')
    assert job.task == "process_upload"
    result = await client.wait(job.id, timeout=20)
    assert isinstance(result, dict)
    assert result["filename"] == "my %22table%22.csv"  # quotes escaped as browsers do
    assert (result["size"], result["lines"], result["content_type"]) == (16, 3, "text/csv")
    assert result["csv"] == {"columns": ["id", "name"], "column_count": 2, "rows": 2}

    path.write_bytes(b"x" * 1001)
    with pytest.raises(RequestRejected) as too_large:
        await client.upload(path)
    assert too_large.value.status == 413
    with pytest.raises(FileNotFoundError):
        await client.upload(tmp_path / "missing.txt")


# --- Reaching the server ---------------------------------------------------------------------------------


def answer(
    status: int,
    body: bytes = b'{"detail":"recorded"}',
    content_type: str = "application/json",
    **headers: str,
) -> bytes:
    """A raw HTTP/1.1 response whose body ends when the connection closes."""
    head = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n{head}connection: close\r\n\r\n".encode()
        + body
    )


@dataclass
class Recorder:
    """A tiny HTTP server of our own: records each request's head and gives the next of `answers`.

    Not a stand-in for jobpulse: it shows what the client sends, and how it takes answers jobpulse gives.
    """

    answers: list[bytes] = field(default_factory=lambda: [answer(404)])
    requests: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *lines = head.strip().split("\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
        self.requests.append((time.monotonic(), request_line, headers))
        await reader.readexactly(int(headers.get("content-length", "0")))  # unread, closing would reset
        writer.write(self.answers[min(len(self.requests), len(self.answers)) - 1])
        await writer.drain()
        writer.close()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", recorder.port)
    async with server:
        yield recorder


async def test_the_token_is_sent_as_a_bearer_authorization_header(
    recorder: Recorder, connect: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(JobNotFound):
        await connect(recorder.url, token="s3cret").get("job1")
    with pytest.raises(JobNotFound):
        await connect(recorder.url, token="s3cret").wait("job1")
    monkeypatch.setenv("JOBPULSE_URL", recorder.url)
    monkeypatch.setenv("JOBPULSE_TOKEN", "from-env")
    with pytest.raises(JobNotFound):
        await connect().get("job2")
    monkeypatch.delenv("JOBPULSE_TOKEN")
    with pytest.raises(JobNotFound):
        await connect().get("job3")
    sent = [(line, headers.get("authorization")) for _, line, headers in recorder.requests]
    assert sent == [
        ("GET /jobs/job1 HTTP/1.1", "Bearer s3cret"),
        ("GET /jobs/job1/events HTTP/1.1", "Bearer s3cret"),
        ("GET /jobs/job2 HTTP/1.1", "Bearer from-env"),
        ("GET /jobs/job3 HTTP/1.1", None),
    ]


async def test_a_port_nobody_listens_on_raises_server_unavailable_at_once(connect: ClientFactory) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = connect(url, reconnect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as unavailable:
        await client.submit("simulate", steps=1, interval_ms=0)
    assert time.monotonic() - started < 0.5
    assert unavailable.value.url == f"{url}/jobs"
    assert "ConnectError" in unavailable.value.reason
    with pytest.raises(ServerUnavailable):
        await client.wait("job1")  # a stream keeps trying, but only for reconnect_timeout
    assert time.monotonic() - started < 1.5


async def test_a_server_that_keeps_answering_503_is_retried_after_retry_after_then_given_up(
    recorder: Recorder, connect: ClientFactory
) -> None:
    recorder.answers = [answer(503, Retry_After="1")]
    client = connect(recorder.url, reconnect_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as unavailable:
        await client.wait("job1")
    elapsed = time.monotonic() - started
    assert "503" in unavailable.value.reason
    times = [at for at, _, _ in recorder.requests]
    assert times[1] - times[0] >= 1  # Retry-After honoured
    assert 1.5 <= elapsed < 2.5  # the last try is made right at the end of reconnect_timeout
    assert len(times) == 3


async def test_a_plain_request_answered_503_is_sent_again_after_retry_after(
    recorder: Recorder, connect: ClientFactory
) -> None:
    view = {
        "id": "job1",
        "task": "simulate",
        "status": "queued",
        "progress": 0,
        "attempt": 0,
        "created_at": "2026-01-01T00:00:00Z",
        "last_event_id": 1,
        "events_url": "/jobs/job1/events",
    }
    recorder.answers = [answer(503, Retry_After="1"), answer(202, json.dumps(view).encode())]
    job = await connect(recorder.url).submit("simulate", steps=1)
    assert job.id == "job1"
    (first, line, _), (second, again, _) = recorder.requests
    assert line == again == "POST /jobs HTTP/1.1"
    assert second - first >= 1


@pytest.mark.parametrize("status", [502, 504])
async def test_a_submission_answered_by_a_proxy_error_is_not_sent_again(
    recorder: Recorder, connect: ClientFactory, status: int
) -> None:
    """The web process may have accepted it before the proxy gave up: sending it again could make two jobs."""
    recorder.answers = [answer(status, b"<html>Bad Gateway</html>", "text/html", Retry_After="1")]
    with pytest.raises(ServerUnavailable) as unavailable:
        await connect(recorder.url).submit("simulate", steps=1)
    assert f"{status}" in unavailable.value.reason and "not sent again" in unavailable.value.reason
    assert [line for _, line, _ in recorder.requests] == ["POST /jobs HTTP/1.1"]
    # reads are still retried through a proxy's errors
    recorder.requests.clear()
    recorder.answers = [answer(status, Retry_After="1"), answer(404)]
    with pytest.raises(JobNotFound):
        await connect(recorder.url).get("job1")
    assert [line for _, line, _ in recorder.requests] == ["GET /jobs/job1 HTTP/1.1"] * 2


async def test_a_stream_gone_silent_is_noticed_and_resumed(
    make_stack: StackFactory, connect: ClientFactory
) -> None:
    """A dead network path (nothing closes; bytes stop) costs one read timeout, then the stream resumes."""
    stack = await make_stack(progress_interval_ms=0, sse_retry_ms=100)
    proxy = FreezableProxy(stack.web.port)
    await proxy.start()
    try:
        client = connect(f"http://127.0.0.1:{proxy.port}", stream_read_timeout=0.5)
        job = await client.submit("simulate", steps=20, interval_ms=50)
        progress = Progress()
        async with anyio.create_task_group() as tasks:
            outcome: list[JsonValue] = []

            async def wait() -> None:
                outcome.append(await client.wait(job.id, timeout=20, on_progress=progress))

            tasks.start_soon(wait)
            await until(lambda: _progress_above(stack, job.id, 10))
            proxy.freeze_open_connections()
    finally:
        await proxy.stop()
    assert outcome == [{"steps": 20}]
    assert progress.steps == list(range(1, 21))


# --- Real web processes, restarted and stopped -----------------------------------------------------------


class Processes:
    """The real `uvicorn web.app:app` and `arq worker.WorkerSettings` as child processes of one test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[Process] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def worker(self) -> None:
        self.started.append(worker_process(self.env, self.logs / "worker.log").start())

    def web(self, name: str) -> Process:
        process, _ = web_process(self.env, self.logs / f"{name}.log", self.port)
        self.started.append(process.start())
        wait_until_serving(self.url, process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def processes(redis_server: RedisServer, tmp_path: Path) -> Iterator[Processes]:
    env = process_env(
        redis_server.url,
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
        JOBPULSE_QUEUE_NAME=f"client:{uuid.uuid4().hex[:8]}",
        JOBPULSE_PROGRESS_INTERVAL_MS="0",
        JOBPULSE_WORKER_POLL_DELAY_S="0.05",
    )
    started = Processes(env, tmp_path)
    yield started
    started.stop_all()


async def test_wait_survives_a_web_restart_mid_job_without_losing_or_repeating_progress(
    processes: Processes, connect: ClientFactory
) -> None:
    processes.worker()
    first = await anyio.to_thread.run_sync(processes.web, "web1")
    client = connect(processes.url, max_backoff=0.5)
    job = await client.submit("simulate", steps=60, interval_ms=50)
    progress = Progress()
    outcome: list[JsonValue] = []

    async def wait() -> None:
        outcome.append(await client.wait(job.id, timeout=30, on_progress=progress))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await until(lambda: _has_progress(progress, 10))
        first.signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(first.wait, 10)
        steps_before_restart = len(progress.events)
        second = await anyio.to_thread.run_sync(processes.web, "web2")
    assert "Application shutdown complete" in first.output()
    assert steps_before_restart < 60  # the restart really was in the middle of the job
    # and the wait went on there: uvicorn's access line, a JSON string (quotes escaped) in a file
    assert re.search(rf'"GET /jobs/{re.escape(job.id)}/events HTTP/1\.1\\?" 200', second.output())
    assert outcome == [{"steps": 60}]
    assert progress.steps == list(range(1, 61))


async def _has_progress(progress: Progress, count: int) -> bool:
    return len(progress.events) >= count


async def test_wait_gives_up_when_the_web_process_goes_away_for_good(
    processes: Processes, connect: ClientFactory
) -> None:
    processes.worker()
    web = await anyio.to_thread.run_sync(processes.web, "web")
    client = connect(processes.url, reconnect_timeout=1)
    job = await client.submit("simulate", steps=200, interval_ms=50)
    progress = Progress()
    raised: list[ServerUnavailable] = []

    async def wait() -> None:
        with pytest.raises(ServerUnavailable) as unavailable:
            await client.wait(job.id, timeout=30, on_progress=progress)
        raised.append(unavailable.value)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await until(lambda: _has_progress(progress, 1))
        stopping = time.monotonic()
        await anyio.to_thread.run_sync(web.stop)
    assert 1 <= time.monotonic() - stopping < 2.5
    [unavailable] = raised
    assert unavailable.url == f"{processes.url}/jobs/{job.id}/events"
    assert "ConnectError" in unavailable.reason


def sse(event_id: int, event: str, **data: Any) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps({'job_id': 'job1', 'ts': 1.0, **data})}\n\n"


async def test_a_stream_cut_short_resumes_after_its_retry_hint_without_repeating_events(
    recorder: Recorder, connect: ClientFactory
) -> None:
    """A stopping web process ends the stream with a bare `retry: 250`: the client is back 250 ms later,
    not after the 2 s of the stream's first hint, and what the next stream repeats is dropped."""
    queued = sse(1, "status", status="queued", attempt=0)
    step = sse(2, "progress", progress=50.0, current=1)
    done = sse(3, "status", status="succeeded", attempt=1, result="ok")
    recorder.answers = [
        answer(200, f": connected\nretry: 2000\n{queued}{step}retry: 250\n".encode(), "text/event-stream"),
        answer(200, f": connected\nretry: 2000\n{step}{done}".encode(), "text/event-stream"),
    ]
    progress = Progress()
    assert await connect(recorder.url).wait("job1", timeout=5, on_progress=progress) == "ok"
    assert progress.steps == [1]
    (first, _, first_headers), (second, _, second_headers) = recorder.requests
    assert "last-event-id" not in first_headers and second_headers["last-event-id"] == "2"
    assert 0.25 <= second - first < 1


# --- API keys, job tokens and per-client limits ----------------------------------------------------------

API_KEY = "client-test-key-0123456789"


async def test_with_api_keys_the_key_submits_and_the_job_token_reads(
    make_stack: StackFactory, connect: ClientFactory
) -> None:
    stack = await make_stack(
        progress_interval_ms=0, api_keys=(SecretStr(API_KEY),), token_secret=SecretStr("t" * 32)
    )
    with pytest.raises(RequestRejected) as refused:
        await connect(stack.web.url).submit("simulate", steps=1, interval_ms=0)
    assert refused.value.status == 401
    job = await connect(stack.web.url, token=API_KEY).submit("simulate", steps=3, interval_ms=10)
    assert isinstance(job, SubmittedJob) and job.token
    reader = connect(stack.web.url, token=job.token)
    assert await reader.wait(job.id, timeout=20) == {"steps": 3}
    events, _ = await reader.events(job.id)
    assert [e.status for e in events if isinstance(e, StatusEvent)][-1] is JobStatus.SUCCEEDED
    # the token reads only its own job, and cancels nothing
    other = await connect(stack.web.url, token=API_KEY).submit("simulate", steps=1, interval_ms=0)
    for attempt in (reader.get(other.id), reader.cancel(job.id)):
        with pytest.raises(RequestRejected) as refused:
            await attempt
        assert refused.value.status == 401


async def test_a_429_is_waited_out_like_a_503(make_stack: StackFactory, connect: ClientFactory) -> None:
    """At the stream limit the client waits `Retry-After` and tries again rather than giving up."""
    stack = await make_stack(progress_interval_ms=0, max_streams_per_client=1)
    job = await stack.submit(steps=2, interval_ms=10, start_delay_ms=1_000)
    holder = await stack.client.send(
        stack.client.build_request("GET", f"/jobs/{job['id']}/events"), stream=True
    )
    assert holder.status_code == 200

    async def free_the_slot_soon() -> None:
        await anyio.sleep(1)
        await holder.aclose()

    started = time.monotonic()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(free_the_slot_soon)
        result = await connect(stack.web.url).wait(job["id"], timeout=30)
    assert result == {"steps": 2}
    assert time.monotonic() - started >= 4  # Retry-After: 5, counted from the first refusal
