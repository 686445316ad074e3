"""Who may do what: an API key to submit, upload and cancel; a key or the job's own token to read a job.

Off until `JOBPULSE_API_KEYS` is set, so trying jobpulse takes no set-up. With an owner rule
(`jobs_router(owner=...)`), the identity the rule answers also submits, and reads and cancels the jobs
it submitted; keys and tokens keep what they open. The request-side checks built on this policy are in
`jobpulse.web.access.guards`.
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
    """Who is asking.

    `identity` names them to the per-client limits. Under an owner rule, `user` is the rule's answer
    (what a submission records as the job's owner) and `owner` the owner a job they name must have; a
    foreign job is then answered as an unknown one. `owner` is None when any job is open to them: no
    rule, an API key, or the job's own token.
    """

    identity: str
    user: str | None = None
    owner: str | None = None


class AccessPolicy:
    def __init__(self, settings: Settings, *, owners: bool = False) -> None:
        """`owners`: the routes run an owner rule, whose identity the checks also weigh."""
        self.owners = owners
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
