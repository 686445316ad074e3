"""Per-job read tokens: signed, expiring, and good for one job only.

A token is `<expiry>.<signature>`: the expiry in Unix seconds, and a truncated HMAC-SHA256 of the job id
and that expiry under `JOBPULSE_TOKEN_SECRET`. Nothing is stored, so any web process sharing the secret
checks any token, and a token cannot be moved to another job or have its expiry pushed back without
the secret. Short enough to sit in a URL, because `EventSource` cannot send headers.
"""

import base64
import hashlib
import hmac
from enum import Enum

_SIGNATURE_BYTES = 18  # 144 bits: far beyond guessing, and 24 characters in base64url


class TokenCheck(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


def _signature(secret: bytes, job_id: str, expires_at: int) -> str:
    mac = hmac.new(secret, f"{job_id}.{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:_SIGNATURE_BYTES]).decode()


def issue(secret: bytes, job_id: str, expires_at: int) -> str:
    return f"{expires_at}.{_signature(secret, job_id, expires_at)}"


def check(secret: bytes, token: str, job_id: str, now: float) -> TokenCheck:
    """Whether `token` opens `job_id` at `now`; a token for another job is simply invalid here."""
    expiry, _, signature = token.partition(".")
    if not (expiry.isascii() and expiry.isdigit()) or len(expiry) > 12:
        return TokenCheck.INVALID
    expected = _signature(secret, job_id, int(expiry))
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return TokenCheck.INVALID
    return TokenCheck.VALID if now < int(expiry) else TokenCheck.EXPIRED
