"""Where a job's routes are, under whatever prefix the app included the router at.

`Location`, `events_url` and a `lost` event's job all point at them, so a router included with
`prefix="/api"` answers `/api/jobs/ID/events`. Found once, when the app starts (`jobs_router`'s lifespan).
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobPaths:
    prefix: str = ""

    def job(self, job_id: str) -> str:
        return f"{self.prefix}/jobs/{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}/jobs/{job_id}/events"


NO_PREFIX = JobPaths()
"""The paths of a router included at the root (the standalone app)."""
