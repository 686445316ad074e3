"""docs/OBSERVABILITY.md stays true: its metric tables, its example log line, its settings."""

import json
import logging
import re
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from arq.connections import ArqRedis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from jobpulse.logs import JsonFormatter
from jobpulse.settings import Settings
from jobpulse.web.access.limits import StreamSlots
from jobpulse.web.metrics import WebMetrics
from jobpulse.web.queue import JobQueue
from jobpulse.web.streaming.stream_counters import StreamCounters
from jobpulse.worker import metrics as worker_metrics
from worker.tasks import registry

DOC = (Path(__file__).resolve().parents[2] / "docs" / "OBSERVABILITY.md").read_text()


def section(title: str) -> str:
    return DOC.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def documented_metrics(title: str) -> dict[str, str]:
    """`name: type` from the table rows of a section."""
    rows = re.findall(r"^\| `(jobpulse_\w+)` \| (\w+) \|", section(title), flags=re.MULTILINE)
    return dict(rows)


def exposed(text: str) -> dict[str, str]:
    return {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in text_string_to_metric_families(text)
        if family.name.startswith("jobpulse_")
    }


@pytest.mark.anyio
async def test_the_web_table_lists_what_web_metrics_exposes(redis: Redis) -> None:
    queue = JobQueue(ArqRedis(connection_pool=redis.connection_pool), f"test:{uuid.uuid4().hex[:8]}")
    text = (
        await WebMetrics(registry, queue, StreamSlots(per_client=0), StreamCounters()).exposition()
    ).decode()
    assert documented_metrics("Web") == exposed(text)


def test_the_worker_table_lists_what_a_worker_exposes() -> None:
    assert documented_metrics("Workers") == exposed(generate_latest(worker_metrics.REGISTRY).decode())


def test_the_status_table_lists_every_outcome() -> None:
    table = section("Workers").split("| `status` |", 1)[1].split("\n\n", 1)[0]
    statuses = re.findall(r"^\| `(\w+)` \| ", table, flags=re.MULTILINE)
    assert tuple(statuses) == worker_metrics.ATTEMPT_OUTCOMES


def test_the_example_lines_are_what_the_formatter_writes() -> None:
    (example,) = re.findall(r"```json\n(.*?)```", DOC, flags=re.DOTALL)
    lines = [json.loads(line) for line in example.splitlines()]
    for line in lines:
        made = logging.LogRecord(line["logger"], logging.INFO, __file__, 1, line["message"], None, None)
        made.created = datetime.fromisoformat(line["time"]).timestamp()
        made.job_id = line["job_id"]
        if line["logger"] == "uvicorn.access":
            made.msg = '%s - "%s %s HTTP/%s" %d'
            made.args = tuple(line[field] for field in ("client", "method", "path", "http_version", "status"))
        assert json.loads(JsonFormatter().format(made)) == line


def test_the_settings_it_names_exist() -> None:
    variables = {f"JOBPULSE_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"JOBPULSE_[A-Z_]+[A-Z]", DOC))
    assert named <= variables, named - variables


def test_the_scrape_config_is_yaml_with_both_jobs() -> None:
    (config,) = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.DOTALL)
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    assert set(jobs) == {"jobpulse-web", "jobpulse-worker"}
    assert jobs["jobpulse-web"]["dns_sd_configs"][0]["port"] == 8000
