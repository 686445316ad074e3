"""Per-job read tokens, as pure functions: good for one job, until their expiry, and unforgeable."""

from hypothesis import given, settings
from hypothesis import strategies as st

from jobpulse.web.access.job_tokens import TokenCheck, check, issue

SECRET = b"0123456789abcdef0123456789abcdef"
JOB = "3f2c0f7e6c0b4a4e9a1d2b3c4d5e6f70"
OTHER_JOB = "0" * 32
NOW = 1_800_000_000


def test_a_token_opens_its_job_until_it_expires() -> None:
    token = issue(SECRET, JOB, NOW + 60)
    assert check(SECRET, token, JOB, NOW) is TokenCheck.VALID
    assert check(SECRET, token, JOB, NOW + 59.9) is TokenCheck.VALID
    assert check(SECRET, token, JOB, NOW + 60) is TokenCheck.EXPIRED


def test_a_token_never_opens_another_job() -> None:
    assert check(SECRET, issue(SECRET, JOB, NOW + 60), OTHER_JOB, NOW) is TokenCheck.INVALID


def test_a_token_signed_with_another_secret_is_invalid() -> None:
    forged = issue(b"another secret, just as long....", JOB, NOW + 60)
    assert check(SECRET, forged, JOB, NOW) is TokenCheck.INVALID


def test_pushing_the_expiry_back_breaks_the_signature() -> None:
    expiry, _, signature = issue(SECRET, JOB, NOW - 1).partition(".")
    assert check(SECRET, f"{NOW + 3600}.{signature}", JOB, NOW) is TokenCheck.INVALID
    assert check(SECRET, f"{expiry}.{signature}", JOB, NOW) is TokenCheck.EXPIRED


def test_a_token_is_short_and_fits_in_a_url_unescaped() -> None:
    token = issue(SECRET, JOB, NOW + 86_400)
    assert len(token) <= 40
    assert all(c.isalnum() or c in "-_.=" for c in token), token


@settings(database=None, max_examples=300)
@given(st.text())
def test_any_string_is_refused_without_an_error(text: str) -> None:
    assert check(SECRET, text, JOB, NOW) is TokenCheck.INVALID


@settings(database=None)
@given(st.integers(min_value=0, max_value=10**11), st.sampled_from(["", "x", "AAAA", "a.b"]))
def test_made_up_signatures_are_invalid(expiry: int, signature: str) -> None:
    assert check(SECRET, f"{expiry}.{signature}", JOB, NOW) is TokenCheck.INVALID
