"""The access checks and per-client limits, as FastAPI dependencies routes declare.

They run before anything else a route does, so a caller without access cannot learn whether a job
exists, and a refused submission costs one Redis command at most. They are coroutines although they
never wait: FastAPI runs a plain `def` dependency in a worker thread (see `jobpulse.web.deps`).
"""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from jobpulse.logs import bind_job
from jobpulse.web.access.job_tokens import TokenCheck
from jobpulse.web.access.policy import AccessPolicy, Caller
from jobpulse.web.deps import services_of
from jobpulse.web.errors import ERROR_BODY, ApiError

bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`JOBPULSE_API_KEYS`), or to read a job, the token its submission returned.",
)
token_query = APIKeyQuery(
    name="token",
    auto_error=False,
    description="The job's token, for clients that cannot set headers (`EventSource`); never logged.",
)

BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
TokenQueryDep = Annotated[str | None, Depends(token_query)]


def _unauthorized(detail: str, *, invalid_token: bool = False) -> ApiError:
    challenge = 'Bearer realm="jobpulse"' + (', error="invalid_token"' if invalid_token else "")
    return ApiError(401, detail, {"WWW-Authenticate": challenge})


def _address(request: Request) -> str:
    # uvicorn has already replaced this with X-Forwarded-For when the peer is a trusted proxy
    # (`--forwarded-allow-ips`, `FORWARDED_ALLOW_IPS`).
    return request.client.host if request.client else "unknown"


async def get_access(request: Request) -> AccessPolicy:
    return services_of(request).access


AccessDep = Annotated[AccessPolicy, Depends(get_access)]


async def key_holder(request: Request, credentials: BearerDep, access: AccessDep) -> Caller:
    """The caller of an endpoint that changes things; with keys on, one of them is required."""
    if not access.enabled:
        return Caller(f"ip:{_address(request)}")
    if credentials is None:
        raise _unauthorized("This server requires an API key: send `Authorization: Bearer KEY`.")
    key_id = access.key_id(credentials.credentials)
    if key_id is None:
        raise _unauthorized("The API key is not valid.", invalid_token=True)
    return Caller(f"key:{key_id}")


async def job_reader(
    job_id: str, request: Request, credentials: BearerDep, token: TokenQueryDep, access: AccessDep
) -> Caller:
    """The caller reading `job_id`; with keys on, an API key or that job's token is required.

    Also tags the request's log lines with the job (`jobpulse.logs`), refused or not: every route that
    reads a job, the event stream included, runs this first, in the request's own task.
    """
    bind_job(job_id)
    if not access.enabled:
        return Caller(f"ip:{_address(request)}")
    presented = [value for value in (credentials and credentials.credentials, token) if value]
    for value in presented:
        if (key_id := access.key_id(value)) is not None:
            return Caller(f"key:{key_id}")
    checks = {access.check_token(value, job_id) for value in presented}
    if TokenCheck.VALID in checks:
        return Caller(f"ip:{_address(request)}")
    if TokenCheck.EXPIRED in checks:
        detail = "This job's token has expired; an API key can still read the job."
        raise _unauthorized(detail, invalid_token=True)
    if presented:
        raise _unauthorized("The token is not valid for this job.", invalid_token=True)
    raise _unauthorized(
        "Reading a job requires its token (returned when it was submitted) or an API key: send "
        "`Authorization: Bearer TOKEN`, or `?token=TOKEN` where headers cannot be set."
    )


KeyHolderDep = Annotated[Caller, Depends(key_holder)]
JobReaderDep = Annotated[Caller, Depends(job_reader)]


async def submitter(request: Request, caller: KeyHolderDep) -> Caller:
    """A key holder (when keys are on) within their submission rate."""
    await services_of(request).submissions.admit(caller.identity)
    return caller


SubmitterDep = Annotated[Caller, Depends(submitter)]

# How routes document these answers in OpenAPI.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "API keys are on and no valid key (or, to read, job token) was sent.", **ERROR_BODY}
}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"description": "Over a per-client limit; retry after `Retry-After` seconds.", **ERROR_BODY}
}
