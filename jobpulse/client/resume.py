"""Following one job's event stream across reconnects, without I/O, so the sync and async clients share it.

The I/O loops in `sync.py` and `aio.py` only move bytes: they ask `Resumer` how long to wait and which
headers to send, hand it every answer, parsed SSE event and failure, and yield what it returns. Every
decision (resume point, dedupe, when a stream is over, what a 204 means, what to raise) is made here once.
"""

import time
from collections.abc import Callable, Mapping
from enum import Enum
from urllib.parse import quote

from httpx_sse import ServerSentEvent
from pydantic import JsonValue

from jobpulse.client.backoff import Backoff, retry_after
from jobpulse.client.errors import (
    UNAVAILABLE_STATUSES,
    JobCancelled,
    JobFailed,
    UnexpectedResponse,
    WaitTimeout,
    detail_of,
    error_for_answer,
)
from jobpulse.models import JobView, LostEvent, ProgressEvent, StatusEvent
from jobpulse.status import JobStatus

JobEvent = ProgressEvent | StatusEvent | LostEvent


class Next(Enum):
    """What the I/O loop does with an answer to the stream request."""

    READ = "read"  # 200: read events from it
    FETCH_JOB = "fetch_job"  # 204: the job has ended; GET it to learn how
    RECONNECT = "reconnect"  # unavailable for now: wait `delay()`, then connect again


def job_path(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


def outcome(job_id: str, terminal: StatusEvent | None) -> JsonValue:
    """What `wait()` gives back for a job's terminal status: its result, or the exception for its end."""
    if terminal is None:  # the streams end only after the terminal status, so this is a bug
        raise UnexpectedResponse(200, "the event stream ended before the job did")
    if terminal.status is JobStatus.FAILED:
        raise JobFailed(job_id, terminal.error, terminal.attempt)
    if terminal.status is JobStatus.CANCELLED:
        raise JobCancelled(job_id, terminal.error)
    return terminal.result


class Resumer:
    """The state of one job's stream: the last event handed out, whether it is over, when to reconnect.

    `deadline` (a `clock()` time) is set by `wait(timeout=...)`: past it, the next step raises `WaitTimeout`,
    and every wait and timeout the loops ask for is cut to end there.
    """

    def __init__(
        self,
        job_id: str,
        backoff: Backoff,
        *,
        last_event_id: int | None = None,
        stream_read_timeout: float,
        deadline: float | None = None,
        wait_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if last_event_id is not None and last_event_id < 0:
            raise ValueError(f"last_event_id must be 0 or more, not {last_event_id}")
        self.job_id = job_id
        self.backoff = backoff
        self.last_event_id = last_event_id or 0
        self.terminal: StatusEvent | None = None
        self.stream_read_timeout = stream_read_timeout
        self.deadline = deadline
        self.wait_timeout = wait_timeout
        self._clock = clock

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    @property
    def events_path(self) -> str:
        return f"{job_path(self.job_id)}/events"

    @property
    def job_path(self) -> str:
        return job_path(self.job_id)

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        return None if self.deadline is None else self.deadline - self._clock()

    def check_deadline(self) -> None:
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise WaitTimeout(self.job_id, self.wait_timeout if self.wait_timeout is not None else 0.0)

    def delay(self) -> float:
        """Seconds to wait before connecting: none at first, then what `Backoff` says, cut at the deadline."""
        return self.backoff.delay(self.deadline)

    def request_headers(self) -> dict[str, str]:
        """Headers for the next connection; raises `WaitTimeout` rather than connect past the deadline."""
        self.check_deadline()
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_event_id:
            headers["Last-Event-ID"] = str(self.last_event_id)
        return headers

    def read_timeout(self) -> float:
        """How long one read may block: longer than the server's keep-alive interval, so that only a dead
        connection times out, and never past the deadline."""
        remaining = self.remaining()
        return self.stream_read_timeout if remaining is None else min(self.stream_read_timeout, remaining)

    def on_stream_answer(self, status: int, headers: Mapping[str, str], body: bytes) -> Next:
        """Decide what the answer to the stream request means (the body is read only when it is not 200)."""
        if status == 200:
            media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
            if media_type != "text/event-stream":
                raise UnexpectedResponse(status, f"expected text/event-stream, got {media_type or 'nothing'}")
            self.backoff.connected()
            return Next.READ
        if status == 204:
            self.backoff.connected()
            return Next.FETCH_JOB
        return self._unavailable_or_raise(status, headers, body)

    def on_event(self, sse: ServerSentEvent, *, at_eof: bool = False) -> JobEvent | None:
        """The event to hand out for one parsed SSE event, or None for a repeat, a hint or an unknown kind.

        `at_eof` marks the block the stream's end left pending: only its `retry:` counts. (httpx-sse
        delivers a `retry:` only with the next event, and a stopping server ends with a bare `retry: 250`.)
        """
        if sse.retry is not None:
            self.backoff.hint(sse.retry)
        if at_eof:
            return None
        try:
            if sse.event == "lost":  # no id, by design: it never moves the resume point
                self.backoff.progressed()
                return LostEvent.model_validate_json(sse.data)
            if sse.event not in ("progress", "status"):
                return None  # a comment-only block some servers dispatch, or an event kind added later
            event_id = int(sse.id)
            if event_id <= self.last_event_id:
                return None  # already handed out: at most once, in order
            event: JobEvent = (
                ProgressEvent.model_validate_json(sse.data)
                if sse.event == "progress"
                else StatusEvent.model_validate_json(sse.data)
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            raise UnexpectedResponse(200, f"malformed {sse.event!r} event {sse.id!r}: {exc}") from None
        self.last_event_id = event_id
        self.backoff.progressed()
        if isinstance(event, StatusEvent) and event.status.is_terminal:
            self.terminal = event
        return event

    def on_stream_end(self) -> None:
        """The server ended the stream before the terminal event (it is stopping): reconnect and resume."""
        self.on_failure("the stream ended before the job did")

    def on_failure(self, reason: str, *, retry_after: float | None = None) -> None:
        """A connection failed or dropped. Past the deadline that is the wait running out (the loops cut
        reads at the deadline), otherwise a reason to reconnect, until `Backoff` gives up."""
        self.check_deadline()
        self.backoff.failed(reason, retry_after=retry_after)

    def on_job_answer(self, status: int, headers: Mapping[str, str], body: bytes) -> StatusEvent | None:
        """After a 204, the job's state becomes its terminal event, so the stream ends as it would have
        live; None when the server is unavailable for now (the loop reconnects)."""
        if status != 200:
            self._unavailable_or_raise(status, headers, body)
            return None
        try:
            view = JobView.model_validate_json(body)
        except ValueError as exc:
            raise UnexpectedResponse(status, f"malformed job: {exc}") from None
        if not view.status.is_terminal:  # cannot happen (204 means terminal); stream again to be sure
            self.on_failure(f"the server said the stream was over, but the job is {view.status}")
            return None
        finished = view.finished_at or view.started_at or view.created_at
        self.terminal = StatusEvent(
            job_id=view.id,
            ts=finished.timestamp(),
            status=view.status,
            attempt=view.attempt,
            error=view.error,
            result=view.result,
        )
        self.last_event_id = max(self.last_event_id, view.last_event_id)
        return self.terminal

    def _unavailable_or_raise(self, status: int, headers: Mapping[str, str], body: bytes) -> Next:
        if status in UNAVAILABLE_STATUSES:
            self.on_failure(f"{status}: {detail_of(body)}", retry_after=retry_after(headers))
            return Next.RECONNECT
        raise error_for_answer(status, body, job_id=self.job_id)
