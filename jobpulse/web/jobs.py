"""`Jobs`: submit, read and cancel jobs from Python, exactly as `POST /jobs`, `GET` and `DELETE` do.

The routes are thin over it, and a user's own endpoint gets one through `JobsDep`
(`jobs: JobsDep` in its signature) to start a job from their own flow and hand the browser its stream.

`owner=`: under an owner rule (`jobs_router(owner=...)`), the identity a job is recorded with, and the
one it must have to be read or cancelled: a foreign job is `UnknownJob`, exactly as an unknown one, so
its existence cannot be probed. Without `owner` every method reaches any job, as the caller is trusted
Python code.
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from jobpulse.ids import is_job_id, new_job_id
from jobpulse.logs import bind_job
from jobpulse.models import JobView, SubmittedJob
from jobpulse.registry import TaskRegistry
from jobpulse.status import JobStatus
from jobpulse.store import JobAlreadyFinished, JobNotFound, JobState
from jobpulse.web.errors import ApiError
from jobpulse.web.queue import EnqueueFailed
from jobpulse.web.services import Services

logger = logging.getLogger(__name__)


async def _enqueue_gate(gate: Path | None, job_id: str) -> None:
    """A test hook (`JOBPULSE_TEST_ENQUEUE_GATE`), off unless set: `submit` stops between recording a job
    and enqueueing it, after creating `<gate>/<job id>.recorded`, until `<gate>/<job id>.enqueue` exists,
    so a test can kill the web process there or race a reconciler against the enqueue
    (tests/integration/test_reconciler.py)."""
    if gate is None:
        return
    (gate / f"{job_id}.recorded").touch()
    while not (gate / f"{job_id}.enqueue").exists():
        await asyncio.sleep(0.01)


def validation_errors(exc: ValidationError, *prefix: str | int) -> list[dict[str, Any]]:
    """pydantic's errors in our 422 shape: `loc`, `msg` and `type` only, never the input."""
    return [
        {"loc": [*prefix, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _task_error(loc: tuple[str, ...], msg: str, kind: str) -> ApiError:
    return ApiError(422, [{"loc": [*loc, "task"], "msg": msg, "type": kind}])


def validate_params(
    registry: TaskRegistry,
    task: str,
    params: BaseModel | Mapping[str, Any] | None,
    loc: tuple[str, ...] = (),
    *,
    started_here: bool = False,
) -> BaseModel:
    """`params` as the task's params model, without running task code; 422 for an unknown task, for one
    another endpoint starts (unless `started_here`), and for params that do not fit."""
    spec = registry.get(task)
    if spec is None:
        known = ", ".join(registry.submittable())
        raise _task_error(loc, f"Unknown task {task!r}; tasks you can submit here: {known}.", "unknown_task")
    if spec.started_by is not None and not started_here:
        raise _task_error(loc, f"Task {task!r} is started by {spec.started_by}, not here.", "not_submittable")
    if isinstance(params, spec.params_model):
        return params
    raw = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    try:
        return spec.params_model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ApiError(422, validation_errors(exc, *loc, "params")) from None


class UnknownJob(ApiError, JobNotFound):
    """`JobNotFound` as `Jobs` raises it: also a 404 `HTTPException`, so that raised in a user's own
    route (through `JobsDep`) the app answers it as jobpulse's routes do, not with a 500."""

    def __init__(self, job_id: str) -> None:
        JobNotFound.__init__(self, job_id)
        ApiError.__init__(self, 404, str(self.args[0]))


class FinishedJob(ApiError, JobAlreadyFinished):
    """`JobAlreadyFinished` as `Jobs.cancel` raises it: also a 409 `HTTPException`, as `UnknownJob`."""

    def __init__(self, job_id: str) -> None:
        JobAlreadyFinished.__init__(self, job_id)
        ApiError.__init__(self, 409, f"{self.args[0]} Only queued or running jobs can be cancelled.")


def visible(job_id: str, state: JobState | None, owner: str | None) -> JobState:
    """`state` if there is one and (with `owner`) it is `owner`'s; else `UnknownJob`, the same for both."""
    if state is None or (owner is not None and state.owner != owner):
        raise UnknownJob(job_id)
    return state


class Jobs:
    """One app's jobs. Errors are `ApiError` (422 for bad params, 404 `UnknownJob`, 409 `FinishedJob`), which
    the app answers as an `HTTPException`, or a Redis error (503)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def submit(
        self,
        task: str,
        params: BaseModel | Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
        started_here: bool = False,
        owner: str | None = None,
    ) -> SubmittedJob:
        """Validate, record as `queued` and enqueue, like `POST /jobs`: the job with `events_url` and
        its `token`. `params` is a dict or an instance of the task's params model; `owner`, recorded
        with the job in the same write, is who alone may read and cancel it by identity.

        `started_here` is for the endpoint that starts a task `POST /jobs` refuses (`started_by`).
        """
        if owner is not None and not (isinstance(owner, str) and owner):
            raise TypeError(f"owner must be a non-empty str (the user's identity), not {owner!r}")
        services = self._services
        model = validate_params(services.registry, task, params, started_here=started_here)
        job_id = job_id or new_job_id()
        bind_job(job_id)  # this request's later log lines, its access line included, are about this job
        params_json = model.model_dump(mode="json")
        state = await services.store.create(job_id, task, params_json, owner=owner)
        try:
            await _enqueue_gate(services.settings.test_enqueue_gate, job_id)
            await services.queue.enqueue(task, job_id, params_json)
        except EnqueueFailed:
            # arq holds it already: a worker's reconciler found it recorded but not queued, and queued it
            logger.info("job %s: already queued by a reconciler", job_id)
        except BaseException:  # including cancellation: a job nobody will run must not stay `queued`
            logger.exception("job %s: enqueue failed", job_id)
            with contextlib.suppress(RedisError):
                await asyncio.shield(
                    services.store.set_status(
                        job_id, JobStatus.FAILED, attempt=0, error="could not be queued"
                    )
                )
            raise
        view = services.view(state)
        return SubmittedJob(**view.model_dump(), token=services.access.issue_token(job_id))

    async def state(self, job_id: str, owner: str | None = None) -> JobState:
        """The job's state; `UnknownJob` (404) for an unknown or malformed id, or (with `owner`) a job
        of another owner, alike, so ids cannot be probed."""
        state = await self._services.store.get(job_id) if is_job_id(job_id) else None
        return visible(job_id, state, owner)

    async def get(self, job_id: str, owner: str | None = None) -> JobView:
        """The job as `GET /jobs/{id}` shows it."""
        return self._services.view(await self.state(job_id, owner))

    async def cancel(self, job_id: str, owner: str | None = None) -> JobView:
        """Like `DELETE /jobs/{id}`: a queued job never starts, a running one is aborted; 409 once ended."""
        bind_job(job_id)
        services = self._services
        state = await self.state(job_id, owner)
        try:
            await services.store.set_status(
                job_id, JobStatus.CANCELLED, attempt=state.attempt, error="cancelled by request"
            )
        except JobAlreadyFinished:
            raise FinishedJob(job_id) from None
        except JobNotFound:  # expired since it was read
            raise UnknownJob(job_id) from None
        await services.queue.abort(job_id)
        return await self.get(job_id)
