"""`GET /jobs/{id}/events`: a job's history, then its live events, as Server-Sent Events."""

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.dependencies.models import Dependant
from starlette.types import Receive, Scope, Send

from jobpulse.models import LostEvent, ProgressEvent, StatusEvent
from jobpulse.store import JobState
from jobpulse.web.access.guards import (
    TOO_MANY,
    UNAUTHORIZED,
    JobReaderDep,
    bearer,
    get_access,
    job_reader,
    token_query,
)
from jobpulse.web.deps import ServicesDep, get_services, services_of
from jobpulse.web.errors import ERROR_BODY, ApiError, JobpulseRoute, error_response
from jobpulse.web.jobs import Jobs, visible
from jobpulse.web.openapi_schemas import inline_schema
from jobpulse.web.streaming.sse_response import SSE_HEADERS, SubscriptionResponse


def _declared(dependant: Dependant) -> dict[str, list[Any]]:
    return {
        "path": [field.alias for field in dependant.path_params],
        "query": [field.alias for field in dependant.query_params],
        "header": [field.alias for field in dependant.header_params],
        "calls": [(sub.call, _declared(sub)) for sub in dependant.dependencies],
    }


_NOTHING: dict[str, list[Any]] = {"path": [], "query": [], "header": [], "calls": []}
_SERVED = {
    "path": ["job_id"],
    "query": ["last_event_id"],
    "header": ["Last-Event-ID"],
    "calls": [
        (
            job_reader,
            {
                **_NOTHING,
                "path": ["job_id"],
                "calls": [(bearer, _NOTHING), (token_query, _NOTHING), (get_access, _NOTHING)],
            },
        ),
        (get_services, _NOTHING),
    ],
}


def _check_declared(dependant: Dependant) -> None:
    if _declared(dependant) != _SERVED:
        raise RuntimeError(
            "stream_events' parameters or dependencies changed: StreamRoute serves it without FastAPI's "
            f"dependency solving, so update `_serve` and `_SERVED` in {__name__} to match."
        )


class StreamRoute(JobpulseRoute):
    """Serves `stream_events` by calling it and its guard directly, not through FastAPI's request machinery.

    An open stream keeps whatever its request's handling left on the stack for as long as it is open:
    FastAPI's `request_response` wrapper (a Request, two AsyncExitStacks, an exception-handling wrapper) and
    what solving the dependencies made, for as long as the stream is open, and a large share of the CPU of
    opening one went into that machinery (docs/PERFORMANCE.md has the figures). FastAPI still declares the
    route from `stream_events`' signature (OpenAPI, the 405 for other methods), and errors reach the app's
    exception handlers as before; `_serve` finds each argument the way the declared dependency would, and
    `_check_declared` fails at import if the declaration and `_serve` ever disagree. Under an owner rule
    (`jobs_router(owner=...)`) the route is solved by FastAPI like any other: the rule is the user's own
    dependency, with dependencies of its own that only FastAPI can solve. `jobs_router` then leaves the stream
    lane out too; what that costs is in its docstring.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        _check_declared(self.dependant)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET" or services_of(Request(scope)).access.owners:
            await super().handle(scope, receive, send)  # FastAPI's 405, or its dependency solving
            return
        await serve_stream(scope, receive, send)


async def serve_stream(scope: Scope, receive: Receive, send: Send) -> None:
    """`GET /jobs/{job_id}/events` as an ASGI app, past FastAPI's request machinery (see `StreamRoute`);
    the stream lane (`jobpulse.web.streaming.stream_lane`) runs it."""
    try:
        response = await _serve(Request(scope, receive), scope["path_params"]["job_id"])
    except Exception as exc:
        if (error := error_response(exc)) is None:
            raise
        response = error
    await response(scope, receive, send)


router = APIRouter(tags=["events"], route_class=StreamRoute)

# The route's name, by which `jobs_router` finds the prefix it was included at (`app.url_path_for`).
ROUTE_NAME = "stream_events"

_EVENT_ID = re.compile(r"[0-9]{1,18}")

_STREAM_DOC = """\
Every event has `id:` (send it back as `Last-Event-ID` to resume), `event:` and one JSON `data:` line:

| event | data | |
|---|---|---|
| `status` | `StatusEvent` | `succeeded`, `failed`, `cancelled` are the last event: the server then closes |
| `progress` | `ProgressEvent` | |
| `lost` | `LostEvent` | no `id:`; the events you asked to resume after are no longer retained |

The stream opens at once with a `: connected` comment and a `retry:` line (no blank line follows
either, so no client library mistakes them for an event), and sends a `: keep-alive` comment whenever
it has been idle for `JOBPULSE_KEEPALIVE_S` seconds. A stream cut short (the server stopping, Redis
unavailable) ends with a short `retry:`: reconnect and resume.
"""


def _resume_point(header: str | None, query: str | None) -> int:
    """The id to resume after: the header wins, since a browser reconnects to the URL it started with."""
    raw = header if header is not None else query
    if raw is None or raw.strip() == "":
        return 0
    text = raw.strip()
    if not _EVENT_ID.fullmatch(text):
        raise ApiError(
            400, f"Last-Event-ID must be an event id this server sent (digits), not {text[:40]!r}."
        )
    return int(text)


@router.get(
    "/jobs/{job_id}/events",
    name=ROUTE_NAME,
    summary="Stream a job's progress and status",
    description=_STREAM_DOC,
    responses={
        200: {
            "description": "`text/event-stream` until the job's terminal status event.",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "oneOf": [
                            inline_schema(StatusEvent),
                            inline_schema(ProgressEvent),
                            inline_schema(LostEvent),
                        ],
                        "description": "The JSON in each event's `data:` line, by `event:` name.",
                    }
                }
            },
        },
        204: {"description": "`Last-Event-ID` is the job's terminal event: nothing more will come."},
        400: {"description": "Malformed `Last-Event-ID`, or one ahead of the job's history.", **ERROR_BODY},
        **UNAUTHORIZED,
        404: {"description": "No such job.", **ERROR_BODY},
        **TOO_MANY,
        503: {"description": "Redis is unavailable; retry after `Retry-After` seconds.", **ERROR_BODY},
    },
)
async def stream_events(
    job_id: str,
    caller: JobReaderDep,
    services: ServicesDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[
        str | None, Query(description="For clients that cannot set the `Last-Event-ID` header.")
    ] = None,
) -> Response:
    after = _resume_point(last_event_id_header, last_event_id)
    settings = services.settings
    hub = services.hub
    lost = b""
    subscription = hub.open_watched(job_id, after)
    if subscription is None:
        state = await Jobs(services).state(job_id, caller.owner)
        if refusal := _refusal(state, after):
            return refusal
        slot = services.streams.take(caller.identity)
        try:
            subscription = await hub.open(job_id, after)
        except BaseException:
            slot.release()
            raise
    else:
        # The job is watched here already, its channel live: the state and the history to replay come
        # in one read, and the stream's first write carries them.
        try:
            found_state, events = await services.store.state_and_events(job_id, after, subscription.read_size)
            found = visible(job_id, found_state, caller.owner)
            if refusal := _refusal(found, after):
                hub.release(subscription)
                return refusal
            slot = services.streams.take(caller.identity)
        except BaseException:
            hub.release(subscription)
            raise
        lost = subscription.end_read(events, found)
    return SubscriptionResponse(
        hub,
        subscription,
        services.clock,
        on_close=slot.release,
        keepalive_s=settings.keepalive_s,
        retry_ms=settings.sse_retry_ms,
        send_timeout_s=settings.send_timeout_s,
        lost=lost,
    )


def _refusal(state: JobState, after: int) -> Response | None:
    """400 for a resume point ahead of the job's history, 204 for one at its terminal event, else None."""
    if after > state.last_event_id:
        raise ApiError(
            400, f"Last-Event-ID {after} is ahead of this job's newest event ({state.last_event_id})."
        )
    if state.is_terminal and after >= state.last_event_id:
        return Response(status_code=204, headers=SSE_HEADERS)
    return None


async def _serve(request: Request, job_id: str) -> Response:
    """`stream_events` with the arguments FastAPI would solve for it, found the same way."""
    services = services_of(request)
    credentials, token = await bearer(request), await token_query(request)
    caller = await job_reader(job_id, request, credentials, token, services.access)
    return await stream_events(
        job_id,
        caller,
        services,
        last_event_id_header=request.headers.get("Last-Event-ID"),
        last_event_id=request.query_params.get("last_event_id"),
    )
