"""Dependencies that hand routes what the process holds, as `Annotated` aliases.

They are coroutines although they never wait: FastAPI calls a plain `def` dependency in a worker thread,
a thread hop per dependency per request, which cost more than all the rest of opening a stream.
"""

from typing import Annotated

from fastapi import Depends, Request

from jobpulse.web.jobs import Jobs
from jobpulse.web.services import Services


def services_of(request: Request) -> Services:
    try:
        services: Services = request.app.state.jobpulse
    except AttributeError:
        raise RuntimeError(
            "jobpulse's routes need the app that included them to have started: include the router "
            "with app.include_router(jobs_router(tasks)) and serve the app (its lifespan starts jobpulse)"
        ) from None
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_jobs(request: Request) -> Jobs:
    return Jobs(services_of(request))


JobsDep = Annotated[Jobs, Depends(get_jobs)]
"""`jobs: JobsDep` in any route of an app that included `jobs_router`: `await jobs.submit(...)`.

Under an owner rule, pass the identity the rule answers (`me: Annotated[str, Depends(rule)]`):
`jobs.submit(..., owner=me)`, `jobs.get(job_id, owner=me)`, `jobs.cancel(job_id, owner=me)`. Without
`owner`, `Jobs` reaches any job: your route decides who may."""
