"""Probes for supervisors and load balancers: `/healthz` (the process serves) and `/readyz` (Redis answers).

Both are open whatever `JOBPULSE_API_KEYS` says (a probe has no credentials), under no per-client limit,
and left out of the OpenAPI document: they are for operators, not API clients. Use `/healthz` to decide
whether to restart a process (liveness) and `/readyz` whether to send it requests (readiness): a Redis
outage makes every web process unready at once, and restarting them would not bring Redis back.
"""

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from jobpulse.web.deps import ServicesDep
from jobpulse.web.errors import JobpulseRoute

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False, route_class=JobpulseRoute)

# A probe must answer before its own timeout (a few seconds in docker-compose and Kubernetes), so the
# PING waits at most this long, or `JOBPULSE_REDIS_TIMEOUT_S` when that is shorter.
READY_TIMEOUT_S = 2.0
RETRY_AFTER_S = "5"
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """200 while the process serves requests; touches nothing else."""
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when Redis answers a PING in time through this process's own pool (the store's, and the queue's
    if it lives apart), else 503 saying why."""
    timeout = min(READY_TIMEOUT_S, services.settings.redis_timeout_s)
    try:
        async with asyncio.timeout(timeout):
            await services.redis.ping()
            if services.queue_redis is not services.redis:
                await services.queue_redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        # The probe may be reachable from outside: the answer names the kind of failure, and the log,
        # for operators, has Redis's own words (which can name hosts and ports).
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else "no connection"
        logger.warning("readyz: Redis is unavailable: %s: %s", type(exc).__name__, exc)
        detail = f"Redis is unavailable ({type(exc).__name__}: {reason}); this process cannot serve jobs."
        return JSONResponse(
            {"status": "unavailable", "redis": "unavailable", "detail": detail},
            status_code=503,
            headers={**NO_STORE, "Retry-After": RETRY_AFTER_S},
        )
    return JSONResponse({"status": "ok", "redis": "ok"}, headers=NO_STORE)
