"""API keys and per-job tokens against the real stack: nothing changes, or is read, without them."""

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from jobpulse.web.access import job_tokens
from tests.conftest import Stack, StackFactory
from tests.support.multipart import CONTENT_TYPE, Part, multipart
from tests.support.sse import TERMINAL, read_events

pytestmark = pytest.mark.anyio

KEY = "key-for-tests-0123456789"
OTHER_KEY = "second-key-abcdefghijkl"
SECRET = "secret-for-tests-0123456789abcdef"
SIMULATE = {"task": "simulate", "params": {"steps": 3, "interval_ms": 20}}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def locked(make_stack: StackFactory) -> Stack:
    return await make_stack(
        api_keys=(SecretStr(KEY), SecretStr(OTHER_KEY)), token_secret=SecretStr(SECRET), token_ttl_s=600
    )


async def submit(stack: Stack, key: str = KEY, body: dict[str, Any] = SIMULATE) -> dict[str, Any]:
    response = await stack.client.post("/jobs", json=body, headers=bearer(key))
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_unauthorized(response: httpx.Response, *, invalid_token: bool) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["detail"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jobpulse"')
    assert ('error="invalid_token"' in challenge) is invalid_token


@pytest.mark.parametrize(
    ("headers", "invalid_token"),
    [
        ({}, False),
        ({"Authorization": f"Basic {KEY}"}, False),  # not a bearer credential at all
        (bearer("wrong"), True),
        (bearer(KEY + "x"), True),
        (bearer(KEY[:-1]), True),
        ({"Authorization": "Bearer"}, False),
    ],
    ids=["none", "basic", "wrong", "longer", "shorter", "empty"],
)
async def test_submitting_needs_a_valid_key(
    locked: Stack, headers: dict[str, str], invalid_token: bool
) -> None:
    response = await locked.client.post("/jobs", json=SIMULATE, headers=headers)
    assert_unauthorized(response, invalid_token=invalid_token)
    assert await locked.redis.keys("jobpulse:{*}:state") == []


async def test_the_key_is_checked_before_the_body_is_read(locked: Stack) -> None:
    """No key: 401, not the 400/413/415/422 the body would earn, so nothing is learnt without a key."""
    for content, content_type in [(b"{", "application/json"), (b"x" * 2_000_000, "text/plain")]:
        response = await locked.client.post("/jobs", content=content, headers={"Content-Type": content_type})
        assert_unauthorized(response, invalid_token=False)


async def test_each_configured_key_submits_and_gets_a_token_for_that_job(locked: Stack) -> None:
    for key in (KEY, OTHER_KEY):
        job = await submit(locked, key)
        expiry, _, signature = job["token"].partition(".")
        assert int(expiry) == pytest.approx(time.time() + 600, abs=5)
        assert signature


async def test_the_job_token_reads_its_job_by_header_or_query(locked: Stack) -> None:
    job = await submit(locked)
    token = job["token"]
    by_header = await locked.client.get(f"/jobs/{job['id']}?wait=10", headers=bearer(token))
    assert by_header.status_code == 200 and by_header.json()["status"] == "succeeded"
    by_query = await locked.client.get(f"/jobs/{job['id']}", params={"token": token})
    assert by_query.status_code == 200 and by_query.json()["id"] == job["id"]
    events = await read_events(locked.client, job["id"], query=f"?token={token}")
    assert events[-1].data["status"] in TERMINAL and "progress" in [e.event for e in events]
    locked.client.headers.update(bearer(token))
    try:
        assert (await read_events(locked.client, job["id"]))[-1].is_terminal
    finally:
        del locked.client.headers["Authorization"]


async def test_an_api_key_reads_any_job(locked: Stack) -> None:
    job = await submit(locked, KEY)
    response = await locked.client.get(f"/jobs/{job['id']}", headers=bearer(OTHER_KEY))
    assert response.status_code == 200


async def test_one_jobs_token_never_opens_another(locked: Stack) -> None:
    first, second = await submit(locked), await submit(locked)
    for path in (f"/jobs/{second['id']}", f"/jobs/{second['id']}?wait=1", f"/jobs/{second['id']}/events"):
        assert_unauthorized(await locked.client.get(path, headers=bearer(first["token"])), invalid_token=True)
        assert_unauthorized(
            await locked.client.get(path, params={"token": first["token"]}), invalid_token=True
        )


async def test_reading_without_a_token_is_refused_even_for_unknown_jobs(locked: Stack) -> None:
    """401 before 404, so job ids cannot be probed without access."""
    job = await submit(locked)
    for job_id in (job["id"], "0" * 32, "not-an-id"):
        for suffix in ("", "/events", "?wait=1"):
            response = await locked.client.get(f"/jobs/{job_id}{suffix}")
            assert_unauthorized(response, invalid_token=False)


async def test_an_expired_or_tampered_token_is_refused(locked: Stack) -> None:
    job = await submit(locked)
    expired = job_tokens.issue(SECRET.encode(), job["id"], int(time.time()) - 1)
    response = await locked.client.get(f"/jobs/{job['id']}", headers=bearer(expired))
    assert_unauthorized(response, invalid_token=True)
    assert "expired" in response.json()["detail"]
    expiry, _, signature = job["token"].partition(".")
    for forged in (
        f"{int(expiry) + 1}.{signature}",
        f"{expiry}.{signature[:-2]}AA",
        f"{expiry}.",
        "..",
        "x" * 5000,
    ):
        response = await locked.client.get(f"/jobs/{job['id']}", params={"token": forged})
        assert_unauthorized(response, invalid_token=True)


async def test_cancelling_needs_a_key_not_just_the_token(locked: Stack) -> None:
    job = await submit(
        locked, body={"task": "simulate", "params": {"steps": 1, "interval_ms": 0, "start_delay_ms": 60_000}}
    )
    for headers in ({}, bearer(job["token"]), bearer("wrong")):
        response = await locked.client.delete(f"/jobs/{job['id']}", headers=headers)
        assert response.status_code == 401
    assert (await locked.client.get(f"/jobs/{job['id']}", headers=bearer(KEY))).json()[
        "status"
    ] != "cancelled"
    response = await locked.client.delete(f"/jobs/{job['id']}", headers=bearer(OTHER_KEY))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


async def test_uploading_needs_a_key_and_leaves_no_file_without_one(locked: Stack) -> None:
    body, content_type = multipart(Part("file", b"hello\n", filename="a.txt")), CONTENT_TYPE
    upload_dir: Path = locked.settings.upload_dir
    refused = await locked.client.post("/uploads", content=body, headers={"Content-Type": content_type})
    assert_unauthorized(refused, invalid_token=False)
    assert list(upload_dir.iterdir()) == []
    accepted = await locked.client.post(
        "/uploads", content=body, headers={"Content-Type": content_type, **bearer(KEY)}
    )
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    done = await locked.client.get(f"/jobs/{job['id']}?wait=10", headers=bearer(job["token"]))
    assert done.json()["status"] == "succeeded" and done.json()["result"]["lines"] == 1


async def test_submission_answers_are_not_cached(locked: Stack) -> None:
    response = await locked.client.post("/jobs", json=SIMULATE, headers=bearer(KEY))
    assert response.headers["Cache-Control"] == "no-store"


async def test_with_keys_off_everything_is_open_and_no_token_is_issued(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0)
    assert job["token"] is None
    assert (await stack.client.get(f"/jobs/{job['id']}?wait=10")).json()["status"] == "succeeded"
    # A stray credential is ignored rather than refused: the API is open.
    response = await stack.client.post("/jobs", json=SIMULATE, headers=bearer("anything"))
    assert response.status_code == 202


async def test_the_openapi_schema_declares_both_ways_to_authenticate(stack: Stack) -> None:
    schema = (await stack.client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyQuery"] == {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": schemes["APIKeyQuery"]["description"],
    }
    assert "token" in schema["components"]["schemas"]["SubmittedJob"]["properties"]


async def test_the_openapi_document_says_whether_credentials_are_needed(stack: Stack, locked: Stack) -> None:
    def requirements(schema: dict[str, Any]) -> list[Any]:
        security: list[Any] = schema["paths"]["/jobs"]["post"]["security"]
        return security

    open_schema = (await stack.client.get("/openapi.json")).json()
    locked_schema = (await locked.client.get("/openapi.json")).json()
    assert {} in requirements(open_schema)
    assert {} not in requirements(locked_schema) and {"HTTPBearer": []} in requirements(locked_schema)
