"""Job ids: 128 random bits, URL-safe, so nobody can guess another's job."""

import re
import secrets

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def new_job_id() -> str:
    """A fresh id that never starts with `-`, so it cannot be mistaken for an option on a command line
    (`jobpulse watch ID`); one in 64 draws is redrawn."""
    while (job_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return job_id


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None
