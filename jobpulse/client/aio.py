"""The asyncio (and trio) client: `sync.py` line for line, with `await`. Every decision is `Resumer`'s."""

import contextlib
import inspect
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
from httpx_sse import EventSource
from pydantic import JsonValue

from jobpulse.client.backoff import retry_after
from jobpulse.client.errors import (
    NOT_ACCEPTED_STATUSES,
    UNAVAILABLE_STATUSES,
    ServerUnavailable,
    WaitTimeout,
    detail_of,
    error_for_answer,
)
from jobpulse.client.multipart import FileBody
from jobpulse.client.options import STREAM_READ_TIMEOUT_S, ClientOptions
from jobpulse.client.resume import JobEvent, Next, Resumer, job_path, outcome
from jobpulse.models import JobView, ProgressEvent, StatusEvent, SubmittedJob


class _UntilEnd:
    """The response's bytes, then one more line break: see `sync._UntilEnd`."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk
        self.ended = True
        yield b"\n"


class AsyncEventStream:
    """A job's events, in order and each at most once, across reconnects, until its terminal status.

    `async for event in stream`; `async with` (or `aclose()`) releases the connection early.
    `last_event_id` is the id of the last event handed out.
    """

    def __init__(self, http: httpx.AsyncClient, options: ClientOptions, resumer: Resumer) -> None:
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

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JobEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _follow(self) -> AsyncGenerator[JobEvent]:
        resumer = self._resumer
        while not resumer.finished:
            await anyio.sleep(resumer.delay())
            request = self._http.build_request(
                "GET",
                resumer.events_path,
                headers=resumer.request_headers(),
                timeout=self._options.stream_timeout(resumer.read_timeout(), resumer.remaining()),
            )
            try:
                response = await self._http.send(request, stream=True)
                try:
                    body = b"" if response.status_code == 200 else await response.aread()
                    step = resumer.on_stream_answer(response.status_code, response.headers, body)
                    if step is Next.READ:
                        async with contextlib.aclosing(self._read(response)) as events:
                            async for event in events:
                                yield event
                finally:
                    await response.aclose()
                if step is Next.FETCH_JOB and (terminal := await self._fetch_terminal()) is not None:
                    yield terminal
            except httpx.TransportError as exc:
                resumer.on_failure(f"{type(exc).__name__}: {exc}")

    async def _read(self, response: httpx.Response) -> AsyncGenerator[JobEvent]:
        resumer = self._resumer
        chunks = _UntilEnd(response.aiter_bytes())
        source = EventSource(
            httpx.Response(200, headers={"content-type": response.headers["content-type"]}, content=chunks)
        )
        # No deadline guard as in sync.py: `AsyncClient.wait` cancels a read that outlasts its deadline.
        async with contextlib.aclosing(source.aiter_sse()) as events:
            async for sse in events:
                event = resumer.on_event(sse, at_eof=chunks.ended)
                if event is not None:
                    yield event
                if resumer.finished:
                    return
        resumer.on_stream_end()

    async def _fetch_terminal(self) -> JobEvent | None:
        resumer = self._resumer
        timeout = self._options.request_timeout(remaining=resumer.remaining())
        response = await self._http.get(resumer.job_path, timeout=timeout)
        return resumer.on_job_answer(response.status_code, response.headers, response.content)


class AsyncClient:
    """`Client` for async code: the same arguments and methods, as coroutines; `async with` or `aclose()`."""

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
        self._http = httpx.AsyncClient(
            base_url=self.options.base_url,
            headers=self.options.headers(),
            timeout=self.options.request_timeout(),
        )

    @property
    def base_url(self) -> str:
        return self.options.base_url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def submit(self, task: str, /, **params: Any) -> SubmittedJob:
        """See `Client.submit`."""
        return await self._submitted(
            lambda: self._http.build_request("POST", "/jobs", json={"task": task, "params": params})
        )

    async def upload(self, path: str | os.PathLike[str], *, filename: str | None = None) -> SubmittedJob:
        """See `Client.upload`; the file is read in a worker thread, so the event loop never waits on disk."""
        body = FileBody(path, filename)
        return await self._submitted(
            lambda: self._http.build_request("POST", "/uploads", headers=body.headers, content=body.achunks())
        )

    async def get(self, job_id: str, *, wait: float | None = None) -> JobView:
        """See `Client.get`."""
        params = {"wait": wait} if wait is not None else None
        timeout = self.options.request_timeout(extra_read=wait or 0.0)
        return await self._job(
            lambda: self._http.build_request("GET", job_path(job_id), params=params, timeout=timeout), job_id
        )

    async def cancel(self, job_id: str) -> JobView:
        """See `Client.cancel`."""
        return await self._job(lambda: self._http.build_request("DELETE", job_path(job_id)), job_id)

    def events(self, job_id: str, *, last_event_id: int | None = None) -> AsyncEventStream:
        """See `Client.events`."""
        return self._stream(job_id, last_event_id=last_event_id)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[ProgressEvent], Awaitable[object] | object] | None = None,
    ) -> JsonValue:
        """See `Client.wait`; `on_progress` may be a plain function or a coroutine function."""
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._stream(job_id, deadline=deadline, wait_timeout=timeout) as stream:
            # The resumer keeps waits and timeouts within the deadline; this also cuts a read short.
            with anyio.move_on_after(timeout) as scope:
                async for event in stream:
                    if isinstance(event, ProgressEvent) and on_progress is not None:
                        called = on_progress(event)
                        if inspect.isawaitable(called):
                            await called
                return outcome(job_id, stream.terminal)
        assert scope.cancelled_caught and timeout is not None
        raise WaitTimeout(job_id, timeout)

    def _stream(
        self,
        job_id: str,
        *,
        last_event_id: int | None = None,
        deadline: float | None = None,
        wait_timeout: float | None = None,
    ) -> AsyncEventStream:
        resumer = Resumer(
            job_id,
            self.options.backoff(f"{self.options.base_url}{job_path(job_id)}/events"),
            last_event_id=last_event_id,
            stream_read_timeout=self.options.stream_read_timeout,
            deadline=deadline,
            wait_timeout=wait_timeout,
        )
        return AsyncEventStream(self._http, self.options, resumer)

    async def _job(self, build: Callable[[], httpx.Request], job_id: str | None = None) -> JobView:
        return JobView.model_validate_json((await self._send(build, job_id)).content)

    async def _submitted(self, build: Callable[[], httpx.Request]) -> SubmittedJob:
        response = await self._send(build, None, retry_on=NOT_ACCEPTED_STATUSES)
        return SubmittedJob.model_validate_json(response.content)

    async def _send(
        self,
        build: Callable[[], httpx.Request],
        job_id: str | None,
        *,
        retry_on: frozenset[int] = UNAVAILABLE_STATUSES,
    ) -> httpx.Response:
        """See `Client._send`."""
        backoff = None
        while True:
            request = build()
            try:
                response = await self._http.send(request)
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
            await anyio.sleep(backoff.delay())
