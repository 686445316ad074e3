"""Turns the exceptions the app raises into HTTP answers, at one boundary, each saying what to do."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from jobpulse.store import JobAlreadyFinished, JobNotFound
from jobpulse.uploads import UploadNotStored
from web.hub import HubUnavailable
from web.queue import EnqueueFailed

RETRY_AFTER_S = "2"

# How routes document their error answers in OpenAPI: `{"detail": ...}`, see `HTTPError` in web.app.
ERROR_BODY = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}}


class BadRequest(Exception):
    """A request that cannot be understood: answered with `status` and `detail`."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def bad_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BadRequest)
        return _error(exc.status, exc.detail, exc.headers)

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return _error(404, str(exc))

    async def finished(_: Request, exc: Exception) -> JSONResponse:
        return _error(409, f"{exc} Only queued or running jobs can be cancelled.")

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        # Any Redis failure (down, timed out, out of memory, read-only replica) is the store being
        # unavailable to this request, not a bug in it: the client should retry.
        return _error(
            503,
            f"Redis is unavailable ({type(exc).__name__}: {exc}); retry shortly.",
            {"Retry-After": RETRY_AFTER_S},
        )

    async def not_queued(_: Request, exc: Exception) -> JSONResponse:
        return _error(
            503, f"The job could not be queued ({exc}); submit it again.", {"Retry-After": RETRY_AFTER_S}
        )

    async def no_streams(_: Request, exc: Exception) -> JSONResponse:
        detail = f"Cannot stream events right now: {exc}; retry shortly."
        return _error(503, detail, {"Retry-After": RETRY_AFTER_S})

    async def not_stored(_: Request, exc: Exception) -> JSONResponse:
        detail = f"The upload could not be stored ({exc}); retry shortly."
        return _error(503, detail, {"Retry-After": RETRY_AFTER_S})

    async def invalid_parameter(_: Request, exc: Exception) -> JSONResponse:
        """FastAPI's own 422s (query parameters), in the shape of ours: `loc`, `msg` and `type` only."""
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return _error(422, errors)

    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.add_exception_handler(UploadNotStored, not_stored)
    app.add_exception_handler(EnqueueFailed, not_queued)
    app.add_exception_handler(JobNotFound, not_found)
    app.add_exception_handler(JobAlreadyFinished, finished)
    app.add_exception_handler(RedisError, unavailable)
    app.add_exception_handler(HubUnavailable, no_streams)
