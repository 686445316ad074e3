"""Submit, inspect and cancel jobs."""

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from redis.exceptions import RedisError

from jobpulse.ids import is_job_id, new_job_id
from jobpulse.logs import bind_job
from jobpulse.models import JobView, SubmitJob, SubmittedJob
from jobpulse.status import JobStatus
from jobpulse.store import JobNotFound, JobState, JobStore
from jobpulse.tasks import TASK_PARAMS, TaskParams
from web.deps import QueueDep, ServicesDep, StoreDep
from web.errors import ERROR_BODY, BadRequest
from web.guards import TOO_MANY, UNAUTHORIZED, JobReaderDep, KeyHolderDep, SubmitterDep
from web.long_poll import MAX_WAIT_S, wait_until_terminal
from web.queue import JobQueue

logger = logging.getLogger(__name__)

router = APIRouter(tags=["jobs"])


def _validation_errors(exc: ValidationError, *prefix: str | int) -> list[dict[str, Any]]:
    return [
        {"loc": [*prefix, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a JSON 413 as soon as it is known to exceed `limit` bytes.

    Done here rather than with FastAPI's `max_body_size`, whose 413 is plain text whenever the client
    sent a Content-Length, unlike every other error this API answers.
    """
    too_large = BadRequest(413, f"The body exceeds {limit} bytes (JOBPULSE_MAX_BODY_BYTES).")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _read_submission(request: Request, limit: int) -> tuple[str, TaskParams]:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise BadRequest(415, f"Content-Type must be application/json, not {media_type or 'missing'!r}.")
    body = await _read_body(request, limit)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(400, f"The body is not valid JSON: {exc}") from None
    try:
        submission = SubmitJob.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(422, _validation_errors(exc, "body")) from None
    params_model = TASK_PARAMS.get(submission.task)
    if params_model is None:
        known = ", ".join(sorted(name for name, model in TASK_PARAMS.items() if model.started_by is None))
        raise BadRequest(
            422,
            [
                {
                    "loc": ["body", "task"],
                    "msg": f"Unknown task {submission.task!r}; tasks you can submit here: {known}.",
                    "type": "unknown_task",
                }
            ],
        )
    if params_model.started_by is not None:
        raise BadRequest(
            422,
            [
                {
                    "loc": ["body", "task"],
                    "msg": f"Task {submission.task!r} is started by {params_model.started_by}, not here.",
                    "type": "not_submittable",
                }
            ],
        )
    try:
        params = params_model.model_validate(submission.params)
    except ValidationError as exc:
        raise BadRequest(422, _validation_errors(exc, "body", "params")) from None
    return submission.task, params


async def load_job(store: JobStore, job_id: str) -> JobState:
    """The job's state; 404 for an unknown or malformed id alike, so ids cannot be probed."""
    state = await store.get(job_id) if is_job_id(job_id) else None
    if state is None:
        raise JobNotFound(job_id)
    return state


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
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitJob"}}},
        }
    },
)
async def submit_job(
    request: Request, response: Response, _: SubmitterDep, services: ServicesDep
) -> SubmittedJob:
    """Validate `params` against the task's params model, record the job as `queued` and enqueue it."""
    task, params = await _read_submission(request, services.settings.max_body_bytes)
    view = await start_job(services.store, services.queue, new_job_id(), task, params)
    return submitted(services, response, view)


def submitted(services: ServicesDep, response: Response, view: JobView) -> SubmittedJob:
    """The answer to a submission: where the job lives, and the token that reads it."""
    response.headers["Location"] = f"/jobs/{view.id}"
    response.headers["Cache-Control"] = "no-store"  # it carries the job's token
    return SubmittedJob(**view.model_dump(), token=services.access.issue_token(view.id))


async def start_job(store: JobStore, queue: JobQueue, job_id: str, task: str, params: TaskParams) -> JobView:
    """Record the job as `queued` and enqueue it; a job that could not be enqueued is marked `failed`."""
    bind_job(job_id)  # this request's later log lines, its access line included, are about this job
    params_json = params.model_dump(mode="json")
    state = await store.create(job_id, task, params_json)
    try:
        await queue.enqueue(task, job_id, params_json)
    except BaseException:  # including cancellation: a job nobody will run must not stay `queued`
        logger.exception("job %s: enqueue failed", job_id)
        with contextlib.suppress(RedisError):
            await asyncio.shield(
                store.set_status(job_id, JobStatus.FAILED, attempt=0, error="could not be queued")
            )
        raise
    return state.view()


@router.get(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="Get a job's current state",
    responses={
        **UNAUTHORIZED,
        404: {"description": "No such job (or its retention expired).", **ERROR_BODY},
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
    store = services.store
    state = await load_job(store, job_id)
    if wait and not state.is_terminal:
        slot = services.streams.take(caller.identity)
        try:
            await wait_until_terminal(services.hub, job_id, state.last_event_id, wait)
        finally:
            slot.release()
        state = await load_job(store, job_id)
    return state.view()


@router.delete(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="Cancel a job",
    responses={
        **UNAUTHORIZED,
        404: {"description": "No such job.", **ERROR_BODY},
        409: {"description": "The job has already finished.", **ERROR_BODY},
    },
)
async def cancel_job(job_id: str, _: KeyHolderDep, store: StoreDep, queue: QueueDep) -> JobView:
    """A queued job never starts; a running one is aborted. Watchers get `cancelled` at once."""
    bind_job(job_id)
    state = await load_job(store, job_id)
    await store.set_status(job_id, JobStatus.CANCELLED, attempt=state.attempt, error="cancelled by request")
    await queue.abort(job_id)
    return (await load_job(store, job_id)).view()
