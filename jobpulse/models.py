"""Job and event models: the shapes on the wire, in Redis and in the OpenAPI document."""

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from jobpulse.status import JobStatus


class SubmitJob(BaseModel):
    """Body of `POST /jobs`."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Name of a registered task.", examples=["simulate"])
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters, validated against the task's params model.",
        examples=[{"steps": 20, "interval_ms": 200}],
    )


class ProgressEvent(BaseModel):
    """`data:` of an SSE `progress` event."""

    job_id: str
    ts: float = Field(description="Publisher's clock, epoch seconds.")
    progress: float = Field(ge=0, le=100, description="Percent complete.")
    message: str | None = None
    current: int | None = Field(default=None, ge=0)
    total: int | None = Field(default=None, ge=0)


class StatusEvent(BaseModel):
    """`data:` of an SSE `status` event; `succeeded`, `failed` and `cancelled` end the stream."""

    job_id: str
    ts: float = Field(description="Publisher's clock, epoch seconds.")
    status: JobStatus
    attempt: int = Field(ge=0, description="1 for the first run; 0 while never started.")
    error: str | None = Field(default=None, description="Why the job failed or is being retried.")
    result: JsonValue | None = Field(default=None, description="The task's return value, on `succeeded`.")


class JobView(BaseModel):
    """A job as `GET /jobs/{id}` shows it."""

    id: str
    task: str
    status: JobStatus
    progress: float = Field(ge=0, le=100)
    message: str | None = None
    current: int | None = None
    total: int | None = None
    attempt: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: JsonValue | None = None
    error: str | None = None
    last_event_id: int = Field(description="Id of the newest event; resume after it with Last-Event-ID.")
    events_url: str


class SubmittedJob(JobView):
    """A job as submitting it returns it: with the token that lets its holder read it."""

    token: str | None = Field(
        default=None,
        description=(
            "Opens this job's status and events (as `Authorization: Bearer TOKEN` or `?token=TOKEN`) until "
            "it expires; null when the server has no API keys and jobs are open to all."
        ),
    )


class LostEvent(BaseModel):
    """`data:` of an SSE `lost` event: the events you asked to resume after are no longer retained.

    Sent without an `id:`; the retained history follows it, then live events.
    """

    job_id: str
    ts: float
    last_event_id: int = Field(description="The id the client asked to resume after.")
    first_retained_id: int = Field(description="Oldest event still retained; the stream continues there.")
    job: JobView = Field(description="The job's current state.")


def epoch_to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
