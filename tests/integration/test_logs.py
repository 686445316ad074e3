"""The log format (jobpulse.logs): its fields, and the real web and worker processes writing it."""

import contextvars
import io
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobpulse.ids import new_job_id
from jobpulse.logs import JsonFormatter, TextFormatter, bind_job, current_job, formatter_for
from jobpulse.stack.redis_server import RedisServer
from jobpulse.web.access.access_log import REDACTED, RedactTokens
from jobpulse.worker.job_logs import ArqJobIds
from tests.support.processes import Process, process_env, wait_until_serving, web_process, worker_process
from tests.support.sse import read_events


def record(
    message: str = "hello %s",
    args: tuple[Any, ...] = ("world",),
    name: str = "web.test",
    exc_info: Any = None,
    **extra: Any,
) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def as_json(formatter: logging.Formatter, made: logging.LogRecord) -> dict[str, Any]:
    line = formatter.format(made)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def in_fresh_context(function: Any) -> Any:
    return contextvars.copy_context().run(function)


def test_a_json_line_has_time_level_logger_and_message() -> None:
    line = as_json(JsonFormatter(), record())
    assert line.keys() == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "web.test", "hello world")
    assert line["time"].endswith("+00:00") and "T" in line["time"]


def test_the_job_id_comes_from_the_context_or_the_call() -> None:
    job_id, other = new_job_id(), new_job_id()

    def logged() -> tuple[dict[str, Any], dict[str, Any]]:
        bind_job(job_id)
        return as_json(JsonFormatter(), record()), as_json(JsonFormatter(), record(job_id=other))

    from_context, from_extra = in_fresh_context(logged)
    assert from_context["job_id"] == job_id
    assert from_extra["job_id"] == other  # the call's own says which job, e.g. the stall reaper's
    assert current_job.get() is None  # nothing leaked out of that context


def test_only_job_ids_are_bound() -> None:
    """A request for `/jobs/<anything>` must not put its text into every line it logs."""

    def bound() -> str | None:
        bind_job('x"}\n{"level": "CRITICAL')
        return current_job.get()

    assert in_fresh_context(bound) is None


def test_exceptions_are_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = as_json(JsonFormatter(), record(exc_info=sys.exc_info()))
    assert line["exception"].startswith("Traceback") and "ValueError: boom" in line["exception"]


def test_access_lines_are_split_into_fields_after_the_token_is_redacted() -> None:
    access = record(
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/jobs/x/events?token=secret-token&last_event_id=2", "1.1", 200),
        name="uvicorn.access",
    )
    assert RedactTokens().filter(access)
    line = as_json(JsonFormatter(), access)
    assert line["path"] == f"/jobs/x/events?token={REDACTED}&last_event_id=2"
    assert (line["method"], line["status"], line["client"]) == ("GET", 200, "127.0.0.1:5000")
    assert "secret-token" not in json.dumps(line)


def test_text_lines_name_the_job() -> None:
    job_id = new_job_id()
    assert f" [job {job_id}] hello world" in TextFormatter().format(record(job_id=job_id))
    assert "web.test hello world" in TextFormatter().format(record())


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_at_a_terminal_and_json_elsewhere() -> None:
    assert isinstance(formatter_for(Terminal(), "auto"), TextFormatter)
    assert isinstance(formatter_for(io.StringIO(), "auto"), JsonFormatter)
    assert isinstance(formatter_for(None, "auto"), JsonFormatter)
    assert isinstance(formatter_for(Terminal(), "json"), JsonFormatter)
    assert isinstance(formatter_for(io.StringIO(), "text"), TextFormatter)


def test_arq_lines_from_before_the_job_starts_name_it() -> None:
    """`⊘ ID:task aborted before start` is logged by arq before its `on_job_start` hook has run."""
    job_id = new_job_id()
    aborted = record("%6.2fs ⊘ %s:%s aborted before start", (0.5, job_id, "simulate"), name="arq.worker")
    expired = record("job %s expired", (job_id,), name="arq.worker")
    cron = record("%6.2fs → %s()", (0.0, "cron:upload_sweeper"), name="arq.worker")
    for made in (aborted, expired, cron):
        assert in_fresh_context(lambda made=made: ArqJobIds().filter(made))
    assert as_json(JsonFormatter(), aborted)["job_id"] == job_id
    assert as_json(JsonFormatter(), expired)["job_id"] == job_id
    assert "job_id" not in as_json(JsonFormatter(), cron)


# The real processes, their output going to a file as under a service manager or in a container.

API_KEY = "an-api-key-that-must-not-be-logged"


def json_lines(process: Process) -> list[dict[str, Any]]:
    lines = process.output().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
@pytest.mark.anyio
async def test_web_and_worker_log_json_lines_with_the_job_id_and_no_tokens(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = process_env(
        redis_server.url,
        JOBPULSE_UPLOAD_DIR=str(tmp_path / "uploads"),
        JOBPULSE_QUEUE_NAME=f"logs:{uuid.uuid4().hex[:8]}",
        JOBPULSE_WORKER_POLL_DELAY_S="0.05",
        JOBPULSE_API_KEYS=API_KEY,
        JOBPULSE_TOKEN_SECRET="a-token-secret-of-enough-length",
    )
    worker = worker_process(env, tmp_path / "worker.log").start()
    web, url = web_process(env, tmp_path / "web.log")
    web.start()
    try:
        wait_until_serving(url, web)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post(
                "/jobs",
                json={"task": "simulate", "params": {"steps": 3, "interval_ms": 10, "fail_at": 3}},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert response.status_code == 202, response.text
            job_id, token = response.json()["id"], response.json()["token"]
            # The token travels in the query string, as EventSource sends it, and must not be logged.
            events = await read_events(client, job_id, query=f"?token={token}")
            assert events[-1].data["status"] == "failed"
            assert (await client.get(f"/jobs/{job_id}", params={"token": token})).status_code == 200
            assert (await client.get(f"/jobs/{job_id}", params={"token": "forged"})).status_code == 401
    finally:
        web.stop()
        worker.stop()

    web_log, worker_log = web.output(), worker.output()
    for secret in (token, API_KEY):
        assert secret not in web_log and secret not in worker_log

    web_lines = json_lines(web)  # every line is JSON, uvicorn's own included
    assert any(line["message"].startswith("Application startup complete") for line in web_lines)
    access = [line for line in web_lines if line["logger"] == "uvicorn.access"]
    about_the_job = [line for line in access if job_id in line["path"]]
    assert len(about_the_job) == 3, access  # the stream and two reads
    assert all(line["job_id"] == job_id for line in about_the_job)
    assert {line["path"].partition("?")[2] for line in about_the_job} == {f"token={REDACTED}"}
    submitted = [line for line in access if line["path"] == "/jobs"]
    assert [line["job_id"] for line in submitted] == [job_id]  # the id it was given

    # arq prints two lines before the worker starts and can take over (jobpulse.worker.arq_settings).
    worker_text = worker_log.splitlines()
    assert "Starting worker" in worker_text[0]
    worker_lines = [json.loads(line) for line in worker_text[2:] if line.strip()]
    mentioning = [line for line in worker_lines if job_id in line["message"] or "job_id" in line]
    assert all(line.get("job_id") == job_id for line in mentioning), mentioning
    # arq's start and end lines, and ours from inside the job, in the job's task.
    arq_lines = [line["message"] for line in mentioning if line["logger"] == "arq.worker"]
    assert any("→" in message for message in arq_lines) and any("←" in message for message in arq_lines)
    ours = [line["message"] for line in mentioning if line["logger"] == "jobpulse.worker.lifecycle"]
    assert ours == [f"job {job_id} failed: SimulatedFailure: simulated failure at step 3 of 3"]
