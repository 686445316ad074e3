"""`GET /jobs/{id}/events`: a job's history, then its live events, as Server-Sent Events."""

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from web.deps import ServicesDep
from web.errors import ERROR_BODY, BadRequest
from web.guards import TOO_MANY, UNAUTHORIZED, JobReaderDep
from web.routes.jobs import load_job
from web.sse_response import SSE_HEADERS, SubscriptionResponse

router = APIRouter(tags=["events"])

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
        raise BadRequest(
            400, f"Last-Event-ID must be an event id this server sent (digits), not {text[:40]!r}."
        )
    return int(text)


@router.get(
    "/jobs/{job_id}/events",
    summary="Stream a job's progress and status",
    description=_STREAM_DOC,
    responses={
        200: {
            "description": "`text/event-stream` until the job's terminal status event.",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/StatusEvent"},
                            {"$ref": "#/components/schemas/ProgressEvent"},
                            {"$ref": "#/components/schemas/LostEvent"},
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
    state = await load_job(services.store, job_id)
    if after > state.last_event_id:
        raise BadRequest(
            400, f"Last-Event-ID {after} is ahead of this job's newest event ({state.last_event_id})."
        )
    if state.is_terminal and after >= state.last_event_id:
        return Response(status_code=204, headers=SSE_HEADERS)
    slot = services.streams.take(caller.identity)
    try:
        subscription = await services.hub.open(job_id, after)
    except BaseException:
        slot.release()
        raise
    return SubscriptionResponse(
        services.hub,
        subscription,
        services.clock,
        on_close=slot.release,
        keepalive_s=settings.keepalive_s,
        retry_ms=settings.sse_retry_ms,
        send_timeout_s=settings.send_timeout_s,
    )
