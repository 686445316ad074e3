"""Upload a file and start the job that processes it."""

import contextlib
import os

import anyio
from fastapi import APIRouter, Request, Response

from jobpulse.ids import new_job_id
from jobpulse.models import SubmittedJob
from jobpulse.tasks import ProcessUploadParams
from jobpulse.uploads import UploadNotStored, UploadStorage
from web.deps import ServicesDep
from web.errors import ERROR_BODY
from web.guards import TOO_MANY, UNAUTHORIZED, SubmitterDep
from web.routes.jobs import start_job, submitted
from web.upload_receiver import FIELD, receive_upload

router = APIRouter(tags=["uploads"])

TASK = "process_upload"


@router.post(
    "/uploads",
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
async def upload(
    request: Request, response: Response, _: SubmitterDep, services: ServicesDep
) -> SubmittedJob:
    """Stream the file to the upload directory under a server-chosen name, then queue `process_upload`.

    The client's filename is only shown back (path parts and control characters removed); the file is
    stored as the job's id. A refused or interrupted upload leaves no file behind.
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
        params = ProcessUploadParams(
            filename=received.filename, content_type=received.content_type, size=received.size
        )
        view = await start_job(services.store, services.queue, job_id, TASK, params)
    except BaseException:
        with anyio.CancelScope(shield=True):
            for path in (final, partial):
                with contextlib.suppress(OSError):
                    await anyio.to_thread.run_sync(os.unlink, path)
        raise
    return submitted(services, response, view)
