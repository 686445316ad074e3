"""The access checks and per-client limits, as FastAPI dependencies routes declare.

They run before anything else a route does, so a caller without access cannot learn whether a job
exists, and a refused submission costs one Redis command at most. They are coroutines although they
never wait: FastAPI runs a plain `def` dependency in a worker thread (see `jobpulse.web.deps`).

Under an owner rule (`jobs_router(owner=rule)`), `owner_gate(rule)` is a dependency of every route of
that router: FastAPI solves the rule and its own dependencies (the user's session, their user model) as
for any route, ahead of the guards, and the gate keeps its answer in the request's scope. The guards
then weigh it with keys and tokens (`_owner_or_key`, `_owner_or_reader`); the routes compare it with the
job's recorded owner, so a foreign job answers what an unknown one answers (`jobpulse.web.jobs`).
"""

from collections.abc import Callable, Coroutine
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


OWNER_SCOPE_KEY = "jobpulse.owner"  # the owner rule's answer for this request, kept by `owner_gate`

OwnerRule = Callable[..., Any]
"""A FastAPI dependency answering the caller's identity (a non-empty `str`), None for no user (API keys
and job tokens then decide), or raising the app's own `HTTPException` to refuse."""


def owner_gate(rule: OwnerRule) -> Callable[..., Coroutine[Any, Any, None]]:
    """The dependency that runs `rule` for a route and keeps its answer for the guards."""

    async def run_owner_rule(request: Request, identity: Annotated[object, Depends(rule)]) -> None:
        if identity is not None and not (isinstance(identity, str) and identity):
            raise TypeError(
                f"The owner rule {getattr(rule, '__qualname__', rule)!r} answered {identity!r}: it must "
                "answer the caller's identity as a non-empty str, or None when there is no user, or raise "
                "an HTTPException to refuse."
            )
        request.scope[OWNER_SCOPE_KEY] = identity

    return run_owner_rule


def _rule_user(request: Request) -> str | None:
    """The owner rule's answer; failing closed if the route did not run it."""
    try:
        user: str | None = request.scope[OWNER_SCOPE_KEY]
    except KeyError:
        raise RuntimeError(
            "This app's jobs_router has an owner rule, but this route did not run it: every route that "
            "submits, reads or cancels jobs must come from that jobs_router, or from an uploads_router "
            "given the same owner= rule."
        ) from None
    return user


def _no_user(access: AccessPolicy, *, reading: bool = False) -> ApiError:
    if not access.enabled:
        alternative = " or send the job's token" if reading else ""
        return _unauthorized(f"This request has no user: sign in{alternative}.")
    alternative = ", the job's token" if reading else ""
    return _unauthorized(f"This request has no user: sign in, or send{alternative} an API key.")


def _owner_or_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None, access: AccessPolicy
) -> Caller:
    """Under an owner rule: an API key opens any job, as without one; else the user opens their own."""
    user = _rule_user(request)
    if credentials is not None and (key_id := access.key_id(credentials.credentials)) is not None:
        return Caller(f"key:{key_id}" if user is None else f"user:{user}", user)
    if user is not None:
        return Caller(f"user:{user}", user, owner=user)
    if credentials is not None and access.enabled:
        raise _unauthorized("The API key is not valid.", invalid_token=True)
    raise _no_user(access)


async def key_holder(request: Request, credentials: BearerDep, access: AccessDep) -> Caller:
    """The caller of an endpoint that changes things; with keys on, one of them is required (or, under
    an owner rule, a user)."""
    if access.owners:
        return _owner_or_key(request, credentials, access)
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
    if access.owners:
        return _owner_or_reader(job_id, request, credentials, token, access)
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


def _owner_or_reader(
    job_id: str,
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    token: str | None,
    access: AccessPolicy,
) -> Caller:
    """Under an owner rule: an API key or the job's token opens it, as without one; else the user opens
    it if it is theirs. A user's bad or expired token is passed over: their own jobs stay open to them."""
    user = _rule_user(request)
    limit_id = f"user:{user}" if user is not None else f"ip:{_address(request)}"
    presented = [value for value in (credentials and credentials.credentials, token) if value]
    for value in presented:
        if (key_id := access.key_id(value)) is not None:
            return Caller(f"key:{key_id}" if user is None else limit_id, user)
    checks = {access.check_token(value, job_id) for value in presented}
    if TokenCheck.VALID in checks:
        return Caller(limit_id, user)
    if user is not None:
        return Caller(limit_id, user, owner=user)
    if TokenCheck.EXPIRED in checks:
        raise _unauthorized("This job's token has expired; sign in to read it.", invalid_token=True)
    if presented:
        raise _unauthorized("The token is not valid for this job.", invalid_token=True)
    raise _no_user(access, reading=True)


KeyHolderDep = Annotated[Caller, Depends(key_holder)]
JobReaderDep = Annotated[Caller, Depends(job_reader)]


async def submitter(request: Request, caller: KeyHolderDep) -> Caller:
    """A key holder (when keys are on) within their submission rate."""
    await services_of(request).submissions.admit(caller.identity)
    return caller


SubmitterDep = Annotated[Caller, Depends(submitter)]

# How routes document these answers in OpenAPI.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "API keys are on (or an owner rule found no user) and no valid key (or, to read, "
        "job token) was sent.",
        **ERROR_BODY,
    }
}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"description": "Over a per-client limit; retry after `Retry-After` seconds.", **ERROR_BODY}
}
