"""`GET /metrics`: this web process's Prometheus metrics (`jobpulse.web.metrics`), as Prometheus text.

Open by default, as exporters usually are, and left out of the OpenAPI document (it is for operators).
It shows counts and task names, no job ids or parameters; where even that should stay private, set
`JOBPULSE_METRICS_TOKEN` and give Prometheus the token (`authorization: {credentials: ...}` in its scrape
config). A token of its own rather than an API key: Prometheus's copy could not submit or cancel jobs.
"""

import hmac

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from jobpulse.web.access.guards import BearerDep
from jobpulse.web.deps import ServicesDep
from jobpulse.web.errors import ApiError, JobpulseRoute

router = APIRouter(include_in_schema=False, route_class=JobpulseRoute)


@router.get("/metrics")
async def metrics(services: ServicesDep, credentials: BearerDep) -> Response:
    expected = services.settings.metrics_token
    if expected is not None:
        sent = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(sent.encode(), expected.get_secret_value().encode()):
            raise ApiError(
                401,
                "This server's metrics require JOBPULSE_METRICS_TOKEN: send `Authorization: Bearer TOKEN`.",
                {"WWW-Authenticate": 'Bearer realm="jobpulse-metrics"'},
            )
    body = await services.metrics.exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
