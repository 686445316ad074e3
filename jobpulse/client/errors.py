"""What can go wrong for a jobpulse client, and the one place where HTTP answers become these exceptions.

Every exception subclasses `JobpulseError`, so a caller that only wants "it did not work" catches one
class; the others carry what a caller needs to act (the job id, the worker's error, the status).
"""

import json
from typing import Any


class JobpulseError(Exception):
    """Anything the jobpulse client raises on purpose."""


class JobNotFound(JobpulseError):
    """The server has no such job: it never existed, or its retention expired."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No job {job_id!r} on the server: it never existed or its retention expired.")
        self.job_id = job_id


class JobFailed(JobpulseError):
    """The job ended `failed`: the task raised, timed out, or ran out of attempts."""

    def __init__(self, job_id: str, error: str | None, attempt: int) -> None:
        super().__init__(f"Job {job_id} failed on attempt {attempt}: {error or 'no reason given'}")
        self.job_id = job_id
        self.error = error
        self.attempt = attempt


class JobCancelled(JobpulseError):
    """The job ended `cancelled` (someone sent `DELETE /jobs/{id}`)."""

    def __init__(self, job_id: str, error: str | None) -> None:
        super().__init__(f"Job {job_id} was cancelled: {error or 'no reason given'}")
        self.job_id = job_id
        self.error = error


class WaitTimeout(JobpulseError):
    """`wait(timeout=...)` ran out of time; the job itself goes on."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(
            f"Job {job_id} did not finish within {timeout:g} s; it is still running. "
            "Wait again, or cancel it."
        )
        self.job_id = job_id
        self.timeout = timeout


class ServerUnavailable(JobpulseError):
    """The server could not be reached, or kept answering 503 for longer than `reconnect_timeout`."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"jobpulse at {url} is unavailable ({reason}). Is the server running, and is the base URL "
            "(argument or JOBPULSE_URL) right?"
        )
        self.url = url
        self.reason = reason


class RequestRejected(JobpulseError):
    """The server refused the request itself (400, 401, 409, 413, 422 ...): sending it again will not help.

    `detail` is the server's `detail` as it sent it: a string, or for 422 a list of `{loc, msg, type}`.
    """

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"The server rejected the request ({status}): {_readable(detail)}")
        self.status = status
        self.detail = detail


class UnexpectedResponse(JobpulseError):
    """An answer the API never gives (a 500, a redirect, an HTML page from a proxy, malformed events).

    Usually the base URL points at something that is not jobpulse, or the server has a bug.
    """

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"Unexpected answer from the server ({status}): {_readable(detail)}")
        self.status = status
        self.detail = detail


# Answers that mean "not now": sent again after `Retry-After` (with backoff) until `reconnect_timeout`.
# A proxy in front of a restarting web process answers 502 or 504 where the process itself would say 503;
# 429 is a per-client limit (submissions a minute, open streams) that frees up with time.
UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})
# Of those, the ones after which a submission certainly was not accepted, so it may be sent again. A
# proxy's 502 or 504 may come after the web process accepted it: sending it again could make two jobs.
NOT_ACCEPTED_STATUSES = frozenset({429, 503})


def detail_of(body: bytes) -> Any:
    """The `detail` of a JSON error body, or the body's text when it is not one of ours."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:500]
    if isinstance(payload, dict) and "detail" in payload:
        return payload["detail"]
    return payload


def error_for_answer(status: int, body: bytes, *, job_id: str | None) -> JobpulseError:
    """The exception for an answer that is neither a success nor "unavailable, try again"."""
    if status == 404 and job_id is not None:
        return JobNotFound(job_id)
    if 400 <= status < 500:
        return RequestRejected(status, detail_of(body))
    return UnexpectedResponse(status, detail_of(body))


def _readable(detail: Any) -> str:
    """One line for a person: the `msg` of each 422 entry rather than the raw list."""
    if isinstance(detail, list) and all(isinstance(item, dict) and "msg" in item for item in detail):
        return "; ".join(str(item["msg"]) for item in detail)
    return str(detail)
