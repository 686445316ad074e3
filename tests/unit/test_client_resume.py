"""jobpulse.client.resume: the decisions both clients share, fed events and answers directly.

The end-to-end behaviour is in test_client.py against real servers; these pin the rules one by one,
including answers a correct server never gives (a repeated id, a malformed event).
"""

import json
from typing import Any

import pytest
from httpx_sse import ServerSentEvent

from jobpulse.client.backoff import Backoff
from jobpulse.client.errors import (
    JobCancelled,
    JobFailed,
    JobNotFound,
    RequestRejected,
    UnexpectedResponse,
    WaitTimeout,
)
from jobpulse.client.resume import Next, Resumer, outcome
from jobpulse.models import LostEvent, ProgressEvent, StatusEvent
from jobpulse.status import JobStatus

SSE = {"content-type": "text/event-stream; charset=utf-8"}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def resumer(clock: Clock | None = None, **options: Any) -> Resumer:
    clock = clock or Clock()
    backoff = Backoff(
        "http://jobpulse/jobs/job1/events",
        reconnect_timeout=60,
        max_backoff=10,
        clock=clock,
        jitter=lambda: 0,
    )
    return Resumer("job1", backoff, stream_read_timeout=45, clock=clock, **options)


def sse(event_id: int | str, event: str, retry: int | None = None, **data: Any) -> ServerSentEvent:
    payload = json.dumps({"job_id": "job1", "ts": 1.0, **data})
    return ServerSentEvent(event=event, data=payload, id=str(event_id), retry=retry)


def progress(event_id: int, current: int) -> ServerSentEvent:
    return sse(event_id, "progress", progress=current, current=current)


def test_each_id_is_handed_out_once_in_order() -> None:
    stream = resumer()
    handed = [stream.on_event(e) for e in (progress(1, 1), progress(2, 2), progress(2, 2), progress(1, 1))]
    assert [type(e) for e in handed] == [ProgressEvent, ProgressEvent, type(None), type(None)]
    assert stream.on_event(progress(3, 3)) is not None
    assert stream.last_event_id == 3
    assert stream.request_headers()["Last-Event-ID"] == "3"


def test_a_resumed_stream_starts_after_last_event_id() -> None:
    stream = resumer(last_event_id=5)
    assert stream.request_headers()["Last-Event-ID"] == "5"
    assert stream.on_event(progress(5, 5)) is None
    assert resumer().request_headers() == {"Accept": "text/event-stream", "Cache-Control": "no-store"}


def test_a_lost_event_is_handed_out_and_never_moves_the_resume_point() -> None:
    stream = resumer(last_event_id=2)
    job = {
        "id": "job1",
        "task": "simulate",
        "status": "running",
        "progress": 50,
        "attempt": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "last_event_id": 40,
        "events_url": "/jobs/job1/events",
    }
    lost = sse(2, "lost", last_event_id=2, first_retained_id=31, job=job)  # httpx-sse repeats the last id
    assert isinstance(stream.on_event(lost), LostEvent)
    assert stream.last_event_id == 2
    assert stream.on_event(progress(31, 16)) is not None


def test_the_terminal_status_finishes_the_stream() -> None:
    stream = resumer()
    stream.on_event(sse(1, "status", status="running", attempt=1))
    assert not stream.finished
    stream.on_event(sse(2, "status", status="succeeded", attempt=1, result={"n": 1}))
    assert stream.finished
    assert outcome("job1", stream.terminal) == {"n": 1}


def test_outcome_raises_for_failed_and_cancelled_jobs() -> None:
    failed = StatusEvent(job_id="job1", ts=1, status=JobStatus.FAILED, attempt=3, error="boom")
    with pytest.raises(JobFailed) as job_failed:
        outcome("job1", failed)
    assert (job_failed.value.error, job_failed.value.attempt) == ("boom", 3)
    cancelled = StatusEvent(job_id="job1", ts=1, status=JobStatus.CANCELLED, attempt=1, error="by request")
    with pytest.raises(JobCancelled):
        outcome("job1", cancelled)


def test_retry_hints_set_the_reconnect_delay_and_the_block_left_at_the_end_gives_only_its_hint() -> None:
    stream = resumer()
    stream.on_event(sse(1, "status", retry=2000, status="running", attempt=1))
    assert stream.backoff.retry_s == 2
    # What the end of a cut-short stream dispatches: the bare `retry: 250`, with httpx-sse's sticky id.
    assert stream.on_event(ServerSentEvent(id="1", retry=250), at_eof=True) is None
    stream.on_stream_end()
    assert stream.delay() == 0.25


def test_blocks_without_a_known_event_are_skipped() -> None:
    stream = resumer()
    assert stream.on_event(ServerSentEvent(retry=100)) is None  # a bare hint some servers dispatch
    assert stream.on_event(sse(1, "later-kind")) is None
    assert stream.last_event_id == 0


@pytest.mark.parametrize(
    "bad",
    [sse("x", "progress", progress=1), sse(1, "progress", progress=101), ServerSentEvent("status", "{", "1")],
)
def test_malformed_events_raise_unexpected_response(bad: ServerSentEvent) -> None:
    with pytest.raises(UnexpectedResponse):
        resumer().on_event(bad)


def test_answers_to_the_stream_request() -> None:
    stream = resumer()
    assert stream.on_stream_answer(200, SSE, b"") is Next.READ
    assert stream.on_stream_answer(204, {}, b"") is Next.FETCH_JOB
    assert stream.on_stream_answer(503, {"retry-after": "2"}, b'{"detail": "stopping"}') is Next.RECONNECT
    assert stream.delay() == 2
    assert stream.on_stream_answer(502, {}, b"<html>bad gateway</html>") is Next.RECONNECT
    with pytest.raises(UnexpectedResponse):
        stream.on_stream_answer(200, {"content-type": "text/html"}, b"")
    with pytest.raises(JobNotFound):
        stream.on_stream_answer(404, {}, b'{"detail": "no such job"}')
    with pytest.raises(RequestRejected) as rejected:
        stream.on_stream_answer(400, {}, b'{"detail": "Last-Event-ID is ahead"}')
    assert rejected.value.detail == "Last-Event-ID is ahead"
    with pytest.raises(UnexpectedResponse):
        stream.on_stream_answer(500, {}, b"Internal Server Error")


def test_after_a_204_the_jobs_state_becomes_its_terminal_event() -> None:
    stream = resumer(last_event_id=9)
    job = {
        "id": "job1",
        "task": "simulate",
        "status": "failed",
        "progress": 40,
        "attempt": 2,
        "created_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:05Z",
        "error": "boom",
        "last_event_id": 9,
        "events_url": "/jobs/job1/events",
    }
    terminal = stream.on_job_answer(200, {}, json.dumps(job).encode())
    assert terminal == StatusEvent(
        job_id="job1", ts=1767225605.0, status=JobStatus.FAILED, attempt=2, error="boom"
    )
    assert stream.finished and stream.last_event_id == 9
    assert resumer().on_job_answer(503, {}, b"{}") is None


def test_past_the_deadline_nothing_reconnects() -> None:
    clock = Clock()
    stream = resumer(clock, deadline=10, wait_timeout=10)
    assert stream.read_timeout() == 10  # cut to the deadline
    clock.now = 9
    stream.on_failure("ReadError")
    assert stream.delay() == 0.5
    clock.now = 10
    with pytest.raises(WaitTimeout) as timed_out:
        stream.on_failure("ReadError")  # the read our deadline cut
    assert (timed_out.value.job_id, timed_out.value.timeout) == ("job1", 10)
    with pytest.raises(WaitTimeout):
        stream.request_headers()
