"""Job ids: 128 random bits, URL-safe, so nobody can guess another's job."""

import re
import secrets

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def new_job_id() -> str:
    return secrets.token_urlsafe(16)


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None
