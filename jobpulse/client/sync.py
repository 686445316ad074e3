"""The blocking client. Only I/O lives here: every decision is `Resumer`'s, shared with `aio.py`."""

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import EventSource
from pydantic import JsonValue

from jobpulse.client.backoff import retry_after
from jobpulse.client.errors import (
    NOT_ACCEPTED_STATUSES,
    UNAVAILABLE_STATUSES,
    ServerUnavailable,
    detail_of,
    error_for_answer,
)
from jobpulse.client.multipart import FileBody
from jobpulse.client.options import STREAM_READ_TIMEOUT_S, ClientOptions
from jobpulse.client.resume import JobEvent, Next, Resumer, job_path, outcome
from jobpulse.models import JobView, ProgressEvent, StatusEvent, SubmittedJob


class _UntilEnd:
    """The response's bytes, then one more line break, noting when the server's bytes have run out.

    The extra line break ends the block the stream's last lines left open, so httpx-sse hands over the
    `retry:` a stopping server ends with (it would otherwise drop it); `ended` tells that block apart.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.ended = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        self.ended = True
        yield b"\n"


@contextlib.contextmanager
def _wake_at_deadline(response: httpx.Response, remaining: float | None) -> Iterator[None]:
    """Unblock a read that would outlast `wait()`'s deadline, by shutting the connection's socket then.

    A read timeout cannot do it: httpx fixes it per request, so after a stream of events the next silence
    could still block for the full timeout. Shutting a socket down wakes a blocked `recv()` (closing it
    does not, on Linux); the read then fails, and `Resumer` sees the deadline has passed.
    """
    network_stream = response.extensions.get("network_stream")
    sock = network_stream.get_extra_info("socket") if network_stream is not None else None
    if remaining is None or not isinstance(sock, socket.socket):
        yield  # without a socket (HTTP/2, a custom transport) the read timeout, cut at the deadline, rules
        return

    def shut() -> None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, even under TLS

    timer = threading.Timer(max(remaining, 0.0), shut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class EventStream:
    """A job's events, in order and each at most once, across reconnects, until its terminal status.

    Iterating makes the requests, so nothing happens until the first `next()`. `last_event_id` is the id
    of the last event handed out: give it to `Client.events()` later to carry on from there.
    """

    def __init__(self, http: httpx.Client, options: ClientOptions, resumer: Resumer) -> None:
        self._http = http
        self._options = options
        self._resumer = resumer
        self._events = self._follow()

    @property
    def job_id(self) -> str:
        return self._resumer.job_id

    @property
    def last_event_id(self) -> int:
        return self._resumer.last_event_id

    @property
    def terminal(self) -> StatusEvent | None:
        """The terminal status once it has been handed out, else None."""
        return self._resumer.terminal

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> JobEvent:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _follow(self) -> Generator[JobEvent]:
        resumer = self._resumer
        while not resumer.finished:
            time.sleep(resumer.delay())
            request = self._http.build_request(
                "GET",
                resumer.events_path,
                headers=resumer.request_headers(),
                timeout=self._options.stream_timeout(resumer.read_timeout(), resumer.remaining()),
            )
            try:
                response = self._http.send(request, stream=True)
                try:
                    body = b"" if response.status_code == 200 else response.read()
                    step = resumer.on_stream_answer(response.status_code, response.headers, body)
                    if step is Next.READ:
                        yield from self._read(response)
                finally:
                    response.close()
                if step is Next.FETCH_JOB and (terminal := self._fetch_terminal()) is not None:
                    yield terminal
            except httpx.TransportError as exc:
                resumer.on_failure(f"{type(exc).__name__}: {exc}")

    def _read(self, response: httpx.Response) -> Iterator[JobEvent]:
        resumer = self._resumer
        chunks = _UntilEnd(response.iter_bytes())
        source = EventSource(
            httpx.Response(200, headers={"content-type": response.headers["content-type"]}, content=chunks)
        )
        with _wake_at_deadline(response, resumer.remaining()):
            for sse in source.iter_sse():
                event = resumer.on_event(sse, at_eof=chunks.ended)
                if event is not None:
                    yield event
                if resumer.finished:
                    return
        resumer.on_stream_end()

    def _fetch_terminal(self) -> JobEvent | None:
        resumer = self._resumer
        timeout = self._options.request_timeout(remaining=resumer.remaining())
        response = self._http.get(resumer.job_path, timeout=timeout)
        return resumer.on_job_answer(response.status_code, response.headers, response.content)


class Client:
    """Submit jobs to a jobpulse server and follow them; `with Client() as client:` closes it after.

    `base_url` defaults to `JOBPULSE_URL`, then http://127.0.0.1:8000; `token` to `JOBPULSE_TOKEN`.
    `timeout` bounds connecting and each plain request; `reconnect_timeout` is how long a stream or
    request keeps trying a server that is down or answering 503; `stream_read_timeout` is how long a
    stream may be silent before its connection counts as dead (keep it above the server's keep-alive).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        reconnect_timeout: float = 60.0,
        max_backoff: float = 10.0,
        stream_read_timeout: float = STREAM_READ_TIMEOUT_S,
    ) -> None:
        self.options = ClientOptions.resolve(
            base_url,
            token=token,
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
            max_backoff=max_backoff,
            stream_read_timeout=stream_read_timeout,
        )
        self._http = httpx.Client(
            base_url=self.options.base_url,
            headers=self.options.headers(),
            timeout=self.options.request_timeout(),
        )

    @property
    def base_url(self) -> str:
        return self.options.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def submit(self, task: str, /, **params: Any) -> SubmittedJob:
        """Queue `task` with `params`; the server checks them (`RequestRejected`, 422, if they do not fit)."""
        body = {"task": task, "params": params}
        return self._submitted(lambda: self._http.build_request("POST", "/jobs", json=body))

    def upload(self, path: str | os.PathLike[str], *, filename: str | None = None) -> SubmittedJob:
        """Send a file (read from disk as it goes) and get its `process_upload` job."""
        body = FileBody(path, filename)
        return self._submitted(
            lambda: self._http.build_request("POST", "/uploads", headers=body.headers, content=body.chunks())
        )

    def get(self, job_id: str, *, wait: float | None = None) -> JobView:
        """The job's state; with `wait`, the server holds the answer until the job ends or `wait` s pass."""
        params = {"wait": wait} if wait is not None else None
        timeout = self.options.request_timeout(extra_read=wait or 0.0)
        return self._job(
            lambda: self._http.build_request("GET", job_path(job_id), params=params, timeout=timeout), job_id
        )

    def cancel(self, job_id: str) -> JobView:
        """Cancel a queued or running job (`RequestRejected` with 409 if it has already ended)."""
        return self._job(lambda: self._http.build_request("DELETE", job_path(job_id)), job_id)

    def events(self, job_id: str, *, last_event_id: int | None = None) -> EventStream:
        """The job's events after `last_event_id` (all of them by default), until its terminal status."""
        return self._stream(job_id, last_event_id=last_event_id)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[ProgressEvent], object] | None = None,
    ) -> JsonValue:
        """The job's result once it succeeds; `JobFailed`, `JobCancelled`, or `WaitTimeout` after `timeout` s.

        Follows the event stream, so a dropped connection or a restarted web process only delays it;
        `on_progress` sees every progress event once, in order, the ones from before the call included.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._stream(job_id, deadline=deadline, wait_timeout=timeout) as stream:
            for event in stream:
                if isinstance(event, ProgressEvent) and on_progress is not None:
                    on_progress(event)
            return outcome(job_id, stream.terminal)

    def _stream(
        self,
        job_id: str,
        *,
        last_event_id: int | None = None,
        deadline: float | None = None,
        wait_timeout: float | None = None,
    ) -> EventStream:
        resumer = Resumer(
            job_id,
            self.options.backoff(f"{self.options.base_url}{job_path(job_id)}/events"),
            last_event_id=last_event_id,
            stream_read_timeout=self.options.stream_read_timeout,
            deadline=deadline,
            wait_timeout=wait_timeout,
        )
        return EventStream(self._http, self.options, resumer)

    def _job(self, build: Callable[[], httpx.Request], job_id: str | None = None) -> JobView:
        return JobView.model_validate_json(self._send(build, job_id).content)

    def _submitted(self, build: Callable[[], httpx.Request]) -> SubmittedJob:
        response = self._send(build, None, retry_on=NOT_ACCEPTED_STATUSES)
        return SubmittedJob.model_validate_json(response.content)

    def _send(
        self,
        build: Callable[[], httpx.Request],
        job_id: str | None,
        *,
        retry_on: frozenset[int] = UNAVAILABLE_STATUSES,
    ) -> httpx.Response:
        """Send the request built by `build` (again after a 503, until `reconnect_timeout`)."""
        backoff = None
        while True:
            request = build()
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                raise ServerUnavailable(str(request.url), f"{type(exc).__name__}: {exc}") from exc
            if response.is_success:
                return response
            if response.status_code not in UNAVAILABLE_STATUSES:
                raise error_for_answer(response.status_code, response.content, job_id=job_id)
            reason = f"{response.status_code}: {detail_of(response.content)}"
            if response.status_code not in retry_on:
                reason += "; not sent again, since the server may have accepted it"
                raise ServerUnavailable(str(request.url), reason)
            backoff = backoff or self.options.backoff(str(request.url))
            backoff.failed(reason, retry_after=retry_after(response.headers))
            time.sleep(backoff.delay())
