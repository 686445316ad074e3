"""Follow one job's events to its end, within an optional time limit, showing each as it comes.

The client's event stream blocks while it waits for the server, so it is read on a thread of its own and
handed over through a queue: the main thread stays free to give up when `--timeout` passes and to take
Ctrl-C at once. On either, the reading thread is simply left behind (it is a daemon) and the job is not
touched.
"""

import queue
import threading
import time
from dataclasses import dataclass

from jobpulse.cli.exit_codes import CommandError, ExitCode
from jobpulse.cli.progress_view import JobDisplay
from jobpulse.client import Client, JobEvent
from jobpulse.models import JobView, LostEvent, StatusEvent

# How often the waiting main thread wakes up, so that Ctrl-C is taken promptly on every platform.
_POLL_S = 0.25


@dataclass(frozen=True)
class _Numbered:
    event_id: int | None
    event: JobEvent


class _StreamEnded:
    pass


_Item = JobView | _Numbered | _StreamEnded | BaseException


def _read(client: Client, job_id: str, job: JobView | None, inbox: queue.Queue[_Item]) -> None:
    try:
        inbox.put(job if job is not None else client.get(job_id))
        stream = client.events(job_id)
        for event in stream:
            inbox.put(_Numbered(None if isinstance(event, LostEvent) else stream.last_event_id, event))
        inbox.put(_StreamEnded())
    except BaseException as exc:  # handed to the main thread, which raises it there
        inbox.put(exc)


def follow(
    client: Client,
    job_id: str,
    display: JobDisplay,
    *,
    job: JobView | None = None,
    timeout: float | None = None,
) -> ExitCode:
    """Show the job's events until it ends. Succeeded: its result is shown and the answer is OK.

    Raises CommandError for a job that failed or was cancelled, for `timeout` passing, and for Ctrl-C;
    the client's own errors (not found, unreachable) pass through.
    """
    inbox: queue.Queue[_Item] = queue.Queue()
    reader = threading.Thread(
        target=_read, args=(client, job_id, job, inbox), name="jobpulse-events", daemon=True
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    last: StatusEvent | None = None
    reader.start()
    with display:
        try:
            while True:
                wait_s = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
                if wait_s <= 0:
                    raise CommandError(
                        ExitCode.TIMED_OUT,
                        f"timed out after {timeout:g} s: job {job_id} has not finished (it is not cancelled)",
                    )
                try:
                    item = inbox.get(timeout=wait_s)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _StreamEnded):
                    break
                if isinstance(item, JobView):
                    display.show_job(item)
                    continue
                display.show_event(item.event_id, item.event)
                if isinstance(item.event, StatusEvent):
                    last = item.event
        except KeyboardInterrupt:
            raise CommandError(
                ExitCode.INTERRUPTED, f"stopped watching job {job_id} (it is not cancelled)"
            ) from None
    return _outcome(client, job_id, last, display)


def _outcome(client: Client, job_id: str, last: StatusEvent | None, display: JobDisplay) -> ExitCode:
    if last is None or not last.status.is_terminal:
        # The stream ends after the terminal status; should it ever end early, ask for the job's state.
        job = client.get(job_id)
        if not job.status.is_terminal:
            raise CommandError(
                ExitCode.UNREACHABLE, f"the event stream of job {job_id} ended before the job did"
            )
        last = StatusEvent(
            job_id=job.id,
            ts=time.time(),
            status=job.status,
            attempt=job.attempt,
            error=job.error,
            result=job.result,
        )
    if last.status == "failed":
        raise CommandError(ExitCode.JOB_FAILED, f"job {job_id} failed: {last.error or 'no reason given'}")
    if last.status == "cancelled":
        raise CommandError(ExitCode.JOB_CANCELLED, f"job {job_id} was cancelled")
    display.show_result(last.result)
    return ExitCode.OK
