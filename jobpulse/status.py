"""Job statuses and which of them end a job."""

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)


class EventType(StrEnum):
    """The SSE `event:` names a subscriber can receive."""

    PROGRESS = "progress"
    STATUS = "status"
    # Sent, without an id, when a resuming client asked for events older than the retained history.
    LOST = "lost"
