"""The task registry the web validates submissions against.

Only the *parameters* of each task live here, so the web app can validate and enqueue by name without
importing task code; the worker binds each name to its implementation and fails at start-up if the two
lists differ.
"""

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from jobpulse.uploads import DISPLAY_NAME_MAX


class TaskParams(BaseModel):
    """Base for every task's parameters: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    # A task another endpoint starts (it must set something up first) names that endpoint here, and
    # `POST /jobs` refuses it.
    started_by: ClassVar[str | None] = None


class SimulateParams(TaskParams):
    """Emit `steps` progress updates ending at 100, `interval_ms` apart, after `start_delay_ms`."""

    steps: int = Field(ge=1, le=100_000, description="Number of progress updates.")
    interval_ms: int = Field(ge=0, le=60_000, description="Pause between updates.")
    start_delay_ms: int = Field(default=0, ge=0, le=60_000, description="Pause before the first update.")
    fail_at: int | None = Field(
        default=None, ge=1, le=100_000, description="Raise an error at this step instead of reporting it."
    )


class ProcessUploadParams(TaskParams):
    """Read the job's uploaded file and report its size, line count and SHA-256 (and CSV/image facts)."""

    started_by: ClassVar[str | None] = "POST /uploads"

    filename: str = Field(max_length=DISPLAY_NAME_MAX, description="The client's name for the file.")
    content_type: str | None = Field(default=None, max_length=255, description="As the client sent it.")
    size: int = Field(ge=0, description="Bytes received.")


TASK_PARAMS: dict[str, type[TaskParams]] = {
    "simulate": SimulateParams,
    "process_upload": ProcessUploadParams,
}
