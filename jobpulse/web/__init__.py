"""jobpulse's FastAPI side: the job routes for your own app, or a whole standalone app.

    app.include_router(jobs_router(tasks), prefix="/api")      # in your own FastAPI app
    app.include_router(jobs_router(tasks, owner=user_name))    # each user reads only their own jobs
    app = create_app(tasks)                                    # or jobpulse's own

Public: `jobs_router` (and the `OwnerRule` its `owner=` takes), `uploads_router`, `create_app`,
`JobsDep` (and the `Jobs` it hands out, whose `UnknownJob` and `FinishedJob` are 404 and 409
`HTTPException`s), and `mark_head_only`. Every module below this package is private: its names may
change in any release.
"""

from jobpulse.web.access.guards import OwnerRule
from jobpulse.web.app import create_app
from jobpulse.web.deps import JobsDep
from jobpulse.web.jobs import FinishedJob, Jobs, UnknownJob
from jobpulse.web.router import jobs_router
from jobpulse.web.routes.uploads import uploads_router
from jobpulse.web.streaming.stream_lane import mark_head_only

__all__ = [
    "FinishedJob",
    "Jobs",
    "JobsDep",
    "OwnerRule",
    "UnknownJob",
    "create_app",
    "jobs_router",
    "mark_head_only",
    "uploads_router",
]
