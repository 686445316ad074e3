"""What every response says to browsers: CORS for the allowed origins only, security headers, and
access logs without job tokens."""

import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr, ValidationError

from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer
from jobpulse.web.access.access_log import redact
from tests.conftest import Stack, StackFactory
from tests.support.processes import process_env, wait_until_serving, web_process

pytestmark = pytest.mark.anyio

APP = "https://app.example"
SIMULATE = {"task": "simulate", "params": {"steps": 2, "interval_ms": 10}}


def preflight(
    origin: str, method: str = "POST", headers: str = "authorization, content-type"
) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_allowed_origins_may_call_the_api_and_stream(make_stack: StackFactory) -> None:
    stack = await make_stack(cors_origins=(APP, "http://localhost:3000"))
    response = await stack.client.options("/jobs", headers=preflight(APP))
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in response.headers
    submitted = await stack.client.post("/jobs", json=SIMULATE, headers={"Origin": APP})
    assert submitted.headers["Access-Control-Allow-Origin"] == APP
    assert "Location" in submitted.headers["Access-Control-Expose-Headers"]
    job_id = submitted.json()["id"]
    events = await stack.client.get(f"/jobs/{job_id}/events", headers={"Origin": APP, "Last-Event-ID": "0"})
    assert events.headers["Access-Control-Allow-Origin"] == APP and "succeeded" in events.text
    resume = await stack.client.options(
        f"/jobs/{job_id}/events", headers=preflight(APP, "GET", "last-event-id")
    )
    assert resume.status_code == 200


async def test_other_origins_get_no_cors_headers(make_stack: StackFactory) -> None:
    stack = await make_stack(cors_origins=(APP,))
    refused = await stack.client.options("/jobs", headers=preflight("https://evil.example"))
    assert refused.status_code == 400 and "Access-Control-Allow-Origin" not in refused.headers
    response = await stack.client.post("/jobs", json=SIMULATE, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_no_origin_is_allowed_by_default(stack: Stack) -> None:
    response = await stack.client.options("/jobs", headers=preflight(APP))
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await stack.client.get("/openapi.json", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_credentials_are_allowed_only_for_listed_origins(make_stack: StackFactory) -> None:
    stack = await make_stack(cors_origins=(APP,), cors_allow_credentials=True)
    response = await stack.client.options("/jobs", headers=preflight(APP))
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def test_a_wildcard_origin_with_credentials_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="cannot be used with origin"):
        Settings(cors_origins="*", cors_allow_credentials=True)  # type: ignore[arg-type]
    assert Settings(cors_origins="*").cors_origins == ("*",)  # type: ignore[arg-type]


def test_lists_are_comma_separated_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBPULSE_CORS_ORIGINS", f" {APP} ,http://localhost:3000,")
    monkeypatch.setenv("JOBPULSE_API_KEYS", "one,two")
    monkeypatch.setenv("JOBPULSE_TOKEN_SECRET", "x" * 32)
    settings = Settings()
    assert settings.cors_origins == (APP, "http://localhost:3000")
    assert [key.get_secret_value() for key in settings.api_keys] == ["one", "two"]


def test_keys_without_a_token_secret_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBPULSE_API_KEYS", "do-not-print-me")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "JOBPULSE_TOKEN_SECRET" in str(refused.value)
    assert "do-not-print-me" not in str(refused.value)
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(api_keys=(SecretStr("k"),), token_secret=SecretStr("short"))
    assert "do-not-print-me" not in repr(Settings(token_secret=SecretStr("s" * 16)))


@pytest.mark.parametrize(
    "path", ["/", "/static/app.js", "/static/example.html", "/openapi.json", f"/jobs/{'0' * 32}", "/nowhere"]
)
async def test_every_response_carries_the_security_headers(stack: Stack, path: str) -> None:
    response = await stack.client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_event_streams_carry_them_too_and_still_stream_at_once(stack: Stack) -> None:
    job = await stack.submit(steps=1, interval_ms=0, start_delay_ms=5_000)
    with anyio.fail_after(2):  # the first bytes are not held back by the middleware
        async with stack.client.stream("GET", f"/jobs/{job['id']}/events") as response:
            assert response.headers["Referrer-Policy"] == "no-referrer"
            first = await anext(response.aiter_bytes())
    assert first.startswith(b": connected")


async def test_the_page_keeps_its_content_security_policy(stack: Stack) -> None:
    response = await stack.client.get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/jobs/a/events?token=123.abc", "/jobs/a/events?token=[redacted]"),
        (
            "/jobs/a/events?last_event_id=4&token=1.a-b_c&x=1",
            "/jobs/a/events?last_event_id=4&token=[redacted]&x=1",
        ),
        ("/jobs/a?TOKEN=1.x", "/jobs/a?TOKEN=[redacted]"),
        ("/jobs/a?notatoken=1", "/jobs/a?notatoken=1"),
        ("/jobs/a?x=token=1", "/jobs/a?x=token=1"),
    ],
)
def test_redact_hides_only_token_parameters(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.slow
async def test_uvicorn_access_log_never_shows_a_token(redis_server: RedisServer, tmp_path: Path) -> None:
    """`uvicorn web.app:app` as the README starts it, with its access log on (the default)."""
    secret = "access-log-secret-0123456789abcdef"
    env = process_env(
        redis_server.url,
        JOBPULSE_API_KEYS="log-test-key-0123456789",
        JOBPULSE_TOKEN_SECRET=secret,
        JOBPULSE_QUEUE_NAME=f"log:{uuid.uuid4().hex[:8]}",
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
    )
    web, url = web_process(env, tmp_path / "web.log")
    web.start()
    try:
        await anyio.to_thread.run_sync(wait_until_serving, url, web)
        async with httpx.AsyncClient(base_url=url) as client:
            job = (
                await client.post(
                    "/jobs", json=SIMULATE, headers={"Authorization": "Bearer log-test-key-0123456789"}
                )
            ).json()
            token = job["token"]
            await client.get(f"/jobs/{job['id']}?token={token}")
            await client.get(f"/jobs/{job['id']}?token=forged.{token}")
            # no worker runs the job, so its stream stays open: its request line is logged on the start
            await client.get(
                f"/jobs/{job['id']}/events?token={token}&x=1", timeout=httpx.Timeout(5, read=0.5)
            )
    except httpx.ReadTimeout:
        pass
    finally:
        web.stop()
    log = web.output()
    assert f"/jobs/{job['id']}?token=[redacted]" in log, log
    assert f"/jobs/{job['id']}/events?token=[redacted]&x=1" in log, log
    assert token.split(".")[1] not in log and "forged" not in log, log
