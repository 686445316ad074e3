"""Turns what jobpulse's routes raise into HTTP answers, at one boundary, each saying what to do.

The boundary is jobpulse's own route class (`JobpulseRoute`) and the stream lane, not app-wide exception
handlers: a router included in someone else's app must leave that app's handlers as they are, and still
answer its own errors in its own shape, `{"detail": ...}`.
"""

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from jobpulse.store import JobAlreadyFinished, JobNotFound
from jobpulse.uploads import UploadNotStored
from jobpulse.web.queue import EnqueueFailed
from jobpulse.web.streaming.hub import HubUnavailable

RETRY_AFTER_S = "2"


class HTTPError(BaseModel):
    """The body of every error answer."""

    detail: Any


# How routes document their error answers in OpenAPI.
ERROR_BODY: dict[str, Any] = {"model": HTTPError}


class ApiError(HTTPException):
    """An answer other than success, with its status, `detail` and headers (401, 413, 422, 429, ...).

    An `HTTPException`, so that raised in a user's own route (by `JobsDep`'s `submit`, say) it is
    answered by that app's handler for them, `{"detail": ...}` by default, as in jobpulse's routes.
    """

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers)


def _error(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _retry(status: int, detail: str) -> JSONResponse:
    return _error(status, detail, {"Retry-After": RETRY_AFTER_S})


def error_response(exc: Exception) -> Response | None:
    """The answer for one of jobpulse's errors; None for anything else (a bug: the server's 500)."""
    if isinstance(exc, ApiError):
        return _error(exc.status_code, exc.detail, exc.headers)
    if isinstance(exc, RequestValidationError):
        # FastAPI's own 422s (query parameters), in the shape of ours: `loc`, `msg` and `type` only.
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return _error(422, errors)
    if isinstance(exc, JobNotFound):
        return _error(404, str(exc))
    if isinstance(exc, JobAlreadyFinished):
        return _error(409, f"{exc} Only queued or running jobs can be cancelled.")
    if isinstance(exc, UploadNotStored):
        return _retry(503, f"The upload could not be stored ({exc}); retry shortly.")
    if isinstance(exc, EnqueueFailed):
        return _retry(503, f"The job could not be queued ({exc}); submit it again.")
    if isinstance(exc, HubUnavailable):
        return _retry(503, f"Cannot stream events right now: {exc}; retry shortly.")
    if isinstance(exc, RedisError):
        # Any Redis failure (down, timed out, out of memory, read-only replica) is the store being
        # unavailable to this request, not a bug in it: the client should retry.
        return _retry(503, f"Redis is unavailable ({type(exc).__name__}: {exc}); retry shortly.")
    return None


class JobpulseRoute(APIRoute):
    """A route whose errors (its dependencies' included) become `error_response`s."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if (response := error_response(exc)) is None:
                    raise
                return response

        return handle
