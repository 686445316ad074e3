"""`POST /uploads`: stream a file to the upload directory, then start the job that processes it.

An opt-in: `app.include_router(uploads_router(tasks, task="process_upload"))` beside `jobs_router`, for
a task whose params model subclasses `jobpulse.uploads.UploadParams`.
"""

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from jobpulse.ids import new_job_id
from jobpulse.models import SubmittedJob
from jobpulse.registry import TaskDefinitionError, TaskRegistry
from jobpulse.uploads import UploadNotStored, UploadParams, UploadStorage
from jobpulse.web.access.guards import TOO_MANY, UNAUTHORIZED, OwnerRule, SubmitterDep, owner_gate
from jobpulse.web.deps import ServicesDep
from jobpulse.web.errors import ERROR_BODY, JobpulseRoute
from jobpulse.web.jobs import Jobs
from jobpulse.web.routes.jobs import submitted
from jobpulse.web.upload_receiver import FIELD, receive_upload


def uploads_router(
    registry: TaskRegistry, *, task: str = "process_upload", owner: OwnerRule | None = None
) -> APIRouter:
    """`POST /uploads` starting `task` on each stored file; include it beside `jobs_router(registry)`.

    `owner`: the same rule as that `jobs_router`'s, when it has one: the upload's job is then its
    user's, as a job submitted with `POST /jobs` is.
    """
    spec = registry.get(task)
    if spec is None or not issubclass(spec.params_model, UploadParams):
        raise TaskDefinitionError(
            f"uploads_router(task={task!r}) needs a registered task whose params model subclasses "
            "jobpulse.uploads.UploadParams"
        )
    params_model = spec.params_model

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        UploadStorage(app.state.jobpulse.settings.upload_dir).ensure()
        yield

    gated = [Depends(owner_gate(owner))] if owner is not None else []
    router = APIRouter(tags=["uploads"], route_class=JobpulseRoute, lifespan=lifespan, dependencies=gated)
    router.add_api_route(
        "/uploads",
        _upload_endpoint(task, params_model),
        methods=["POST"],
        name="upload",
        **_UPLOAD_ROUTE,  # type: ignore[arg-type]
    )
    return router


_UPLOAD_ROUTE = dict(
    status_code=202,
    response_model=SubmittedJob,
    summary="Upload a file and process it",
    responses={
        202: {"description": "Stored and queued. `Location` is the job's URL; `events_url` streams it."},
        400: {"description": "Malformed multipart body.", **ERROR_BODY},
        **UNAUTHORIZED,
        413: {"description": "File larger than `JOBPULSE_MAX_UPLOAD_BYTES`.", **ERROR_BODY},
        415: {"description": "Content-Type is not multipart/form-data.", **ERROR_BODY},
        422: {"description": f"No file part named `{FIELD}`, two of them, or another field."},
        **TOO_MANY,
        503: {
            "description": "Redis is unavailable, or the upload directory refused the file (full, gone).",
            **ERROR_BODY,
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [FIELD],
                        "properties": {FIELD: {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)


def _upload_endpoint(task: str, params_model: type[UploadParams]) -> Callable[..., Awaitable[SubmittedJob]]:
    async def upload(
        request: Request, response: Response, caller: SubmitterDep, services: ServicesDep
    ) -> SubmittedJob:
        """Stream the file to the upload directory under a server-chosen name, then queue its job.

        The client's filename is only shown back (path parts and control characters removed); the file
        is stored as the job's id. A refused or interrupted upload leaves no file behind.
        """
        settings = services.settings
        storage = UploadStorage(settings.upload_dir)
        job_id = new_job_id()
        partial = storage.partial_path(job_id)
        received = await receive_upload(
            request.stream(),
            request.headers.get("content-type", ""),
            request.headers.get("content-length"),
            settings.max_upload_bytes,
            partial,
        )
        final = storage.path(job_id)
        try:
            try:
                await anyio.to_thread.run_sync(os.replace, partial, final)
            except OSError as exc:
                raise UploadNotStored(exc.strerror or str(exc)) from exc
            params = params_model(
                filename=received.filename, content_type=received.content_type, size=received.size
            )
            job = await Jobs(services).submit(
                task, params, job_id=job_id, started_here=True, owner=caller.user
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                for path in (final, partial):
                    with contextlib.suppress(OSError):
                        await anyio.to_thread.run_sync(os.unlink, path)
            raise
        return submitted(services, response, job)

    return upload
