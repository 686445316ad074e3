"""Who may do what: an API key to submit, upload and cancel; a key or the job's own token to read a job.

Off until `JOBPULSE_API_KEYS` is set, so trying jobpulse takes no set-up. The request-side checks built on
this policy are in `jobpulse.web.access.guards`.
"""

import hashlib
import hmac
import time
from dataclasses import dataclass

from jobpulse.settings import Settings
from jobpulse.web.access import job_tokens
from jobpulse.web.access.job_tokens import TokenCheck


@dataclass(frozen=True)
class Caller:
    """Who is asking, as far as the per-client limits are concerned."""

    identity: str


class AccessPolicy:
    def __init__(self, settings: Settings) -> None:
        self._keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self._secret = settings.token_secret.get_secret_value().encode() if settings.token_secret else None
        self._token_ttl_s = settings.token_ttl_s

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def key_id(self, presented: str) -> str | None:
        """A short, non-secret name for the API key `presented`, or None if it is not one of ours.

        Every key is compared, in constant time, so timing tells nothing about which one nearly matched.
        """
        candidate = presented.encode("utf-8", "replace")
        matched = None
        for key in self._keys:
            if hmac.compare_digest(key, candidate):
                matched = key
        return None if matched is None else hashlib.sha256(matched).hexdigest()[:12]

    def issue_token(self, job_id: str) -> str | None:
        if self._secret is None:
            return None
        return job_tokens.issue(self._secret, job_id, int(time.time()) + self._token_ttl_s)

    def check_token(self, token: str, job_id: str) -> TokenCheck:
        if self._secret is None:
            return TokenCheck.INVALID
        return job_tokens.check(self._secret, token, job_id, time.time())
