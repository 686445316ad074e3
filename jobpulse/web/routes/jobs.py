"""`POST /jobs`, `GET /jobs/{id}` and `DELETE /jobs/{id}`: thin over `jobpulse.web.jobs.Jobs`."""

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from jobpulse.models import JobView, SubmitJob, SubmittedJob
from jobpulse.web.access.guards import TOO_MANY, UNAUTHORIZED, JobReaderDep, KeyHolderDep, SubmitterDep
from jobpulse.web.deps import ServicesDep
from jobpulse.web.errors import ERROR_BODY, ApiError, JobpulseRoute
from jobpulse.web.jobs import Jobs, validate_params, validation_errors
from jobpulse.web.services import Services
from jobpulse.web.streaming.long_poll import MAX_WAIT_S, wait_until_terminal

router = APIRouter(tags=["jobs"], route_class=JobpulseRoute)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a JSON 413 as soon as it is known to exceed `limit` bytes.

    Done here rather than with FastAPI's `max_body_size`, whose 413 is plain text whenever the client
    sent a Content-Length, unlike every other error this API answers.
    """
    too_large = ApiError(413, f"The body exceeds {limit} bytes (JOBPULSE_MAX_BODY_BYTES).")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _read_submission(request: Request, limit: int) -> SubmitJob:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, f"Content-Type must be application/json, not {media_type or 'missing'!r}.")
    body = await _read_body(request, limit)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from None
    try:
        submission = SubmitJob.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, validation_errors(exc, "body")) from None
    return submission


def submitted(services: Services, response: Response, job: SubmittedJob) -> SubmittedJob:
    """The answer to a submission: where the job lives (it carries the token that reads it)."""
    response.headers["Location"] = services.paths.job(job.id)
    response.headers["Cache-Control"] = "no-store"  # it carries the job's token
    return job


@router.post(
    "/jobs",
    status_code=202,
    response_model=SubmittedJob,
    summary="Submit a job",
    responses={
        202: {"description": "Queued. `Location` is the job's URL; `events_url` streams its progress."},
        400: {"description": "Malformed JSON.", **ERROR_BODY},
        **UNAUTHORIZED,
        413: {"description": "Body larger than `JOBPULSE_MAX_BODY_BYTES`.", **ERROR_BODY},
        415: {"description": "Content-Type is not JSON.", **ERROR_BODY},
        422: {"description": "Unknown task, or params that do not fit the task's params model."},
        **TOO_MANY,
        503: {"description": "Redis is unavailable; retry after `Retry-After` seconds.", **ERROR_BODY},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SubmitJob.model_json_schema()}},
        }
    },
)
async def submit_job(
    request: Request, response: Response, caller: SubmitterDep, services: ServicesDep
) -> SubmittedJob:
    """Validate `params` against the task's params model, record the job as `queued` and enqueue it."""
    submission = await _read_submission(request, services.settings.max_body_bytes)
    params = validate_params(services.registry, submission.task, submission.params, ("body",))
    job = await Jobs(services).submit(submission.task, params, owner=caller.user)
    return submitted(services, response, job)


@router.get(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="Get a job's current state",
    responses={
        **UNAUTHORIZED,
        404: {
            "description": "No such job (or its retention expired, or it is another user's).",
            **ERROR_BODY,
        },
        422: {"description": f"`wait` is not a number from 0 to {MAX_WAIT_S:g}."},
        **TOO_MANY,
    },
)
async def get_job(
    job_id: str,
    caller: JobReaderDep,
    services: ServicesDep,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Long-poll: answer as soon as the job has ended, or after this many seconds.",
        ),
    ] = None,
) -> JobView:
    """The job's state; with `wait`, held until the job is terminal or `wait` seconds have passed.

    For clients that cannot read SSE. The wait rides on the hub's live subscription to the job, so a
    waiting request costs no Redis commands until something happens.
    """
    jobs = Jobs(services)
    state = await jobs.state(job_id, caller.owner)
    if wait and not state.is_terminal:
        slot = services.streams.take(caller.identity)
        try:
            await wait_until_terminal(services.hub, job_id, state.last_event_id, wait)
        finally:
            slot.release()
        state = await jobs.state(job_id, caller.owner)
    return services.view(state)


@router.delete(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="Cancel a job",
    responses={
        **UNAUTHORIZED,
        404: {"description": "No such job (or it is another user's).", **ERROR_BODY},
        409: {"description": "The job has already finished.", **ERROR_BODY},
    },
)
async def cancel_job(job_id: str, caller: KeyHolderDep, services: ServicesDep) -> JobView:
    """A queued job never starts; a running one is aborted. Watchers get `cancelled` at once."""
    return await Jobs(services).cancel(job_id, caller.owner)
