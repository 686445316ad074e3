"""Job and event models: the shapes on the wire, in Redis and in the OpenAPI document."""

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic_core import to_json

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


def progress_event_json(
    job_id: str,
    ts: float,
    progress: float,
    message: str | None = None,
    current: int | None = None,
    total: int | None = None,
) -> bytes:
    """`ProgressEvent(...).model_dump_json(exclude_none=True)`, the same bytes, without building the model.

    The worker writes one per published update, and building and validating a model for it cost three
    times as much. pydantic-core serializes this dict as it does the model: the same field order, and
    numbers and text written the same way (`0.00001`, not Python's `1e-05`). The model's bounds are
    checked here; the types are the caller's (`progress()` checks them).
    """
    if not 0 <= progress <= 100:
        raise ValueError(f"progress must be from 0 to 100, not {progress!r}")
    if (current is not None and current < 0) or (total is not None and total < 0):
        raise ValueError(f"current and total must be >= 0, not {current!r} and {total!r}")
    event: dict[str, object] = {"job_id": job_id, "ts": float(ts), "progress": float(progress)}
    if message is not None:
        event["message"] = message
    if current is not None:
        event["current"] = current
    if total is not None:
        event["total"] = total
    return to_json(event, inf_nan_mode="null")  # as the model writes a `ts` of inf


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
