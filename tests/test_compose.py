"""docker-compose.yml and the Dockerfile: valid, and running the commands and packages the code has.

Compose is checked with `docker-compose config` (or `docker compose config`), which needs no Docker engine.
The file's contents are checked as text, so the test needs no YAML parser.
"""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _compose_command() -> list[str]:
    """`docker-compose`, else `docker compose` if that plugin works; skips (fails in CI) without either."""
    if path := shutil.which("docker-compose"):
        return [path]
    if docker := shutil.which("docker"):
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    message = (
        "Docker Compose is not installed: `apt-get install docker-compose` on Debian/Ubuntu, "
        "or install Docker with its Compose v2 plugin (`docker compose`)."
    )
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_compose_command(), "--file", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _service(name: str) -> str:
    """The lines of one top-level service in docker-compose.yml, by indentation."""
    text = COMPOSE_FILE.read_text()
    match = re.search(rf"^  {re.escape(name)}:\n((?:(?:    .*)?\n)*)", text, re.MULTILINE)
    assert match is not None, f"docker-compose.yml has no service {name!r}"
    return match.group(1)


def test_compose_file_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_compose_config_resolves_every_service() -> None:
    result = _compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"redis", "worker", "web"}


def test_compose_file_has_no_version_key() -> None:
    """Compose v2 warns that `version:` is obsolete; docker-compose 1.27+ reads the file without it."""
    assert not re.search(r"^version:", COMPOSE_FILE.read_text(), re.MULTILINE)


def test_redis_is_durable_and_health_checked() -> None:
    redis = _service("redis")
    assert re.search(r"^    image: redis:7-alpine$", redis, re.MULTILINE)
    assert "--appendonly yes" in redis
    assert "--maxmemory-policy noeviction" in redis
    assert re.search(r"^      - redis-data:/data$", redis, re.MULTILINE)
    assert "healthcheck:" in redis
    assert '"redis-cli", "ping"' in redis


def test_worker_runs_arq_after_redis_is_healthy() -> None:
    worker = _service("worker")
    assert re.search(r"^    command: arq worker\.WorkerSettings$", worker, re.MULTILINE)
    assert "REDIS_URL: redis://redis:6379/0" in worker
    assert "condition: service_healthy" in worker
    assert "stop_grace_period: 30s" in worker
    assert 'JOBPULSE_SHUTDOWN_GRACE_S: "25"' in worker  # under the stop grace period


def test_web_runs_uvicorn_and_checks_its_health() -> None:
    web = _service("web")
    assert re.search(r"^    command: uvicorn web\.app:app --host 0\.0\.0\.0 --port 8000\b", web, re.MULTILINE)
    assert "REDIS_URL: redis://redis:6379/0" in web
    assert '- "8000:8000"' in web
    assert "condition: service_healthy" in web
    assert "healthcheck:" in web
    assert "http://127.0.0.1:8000/openapi.json" in web


def test_web_and_worker_share_the_uploads_volume() -> None:
    for name in ("web", "worker"):
        service = _service(name)
        assert "JOBPULSE_UPLOAD_DIR: /data/uploads" in service, name
        assert re.search(r"^      - uploads:/data/uploads$", service, re.MULTILINE), name
    assert re.search(r"^volumes:\n(?:  .*\n)*  uploads:$", COMPOSE_FILE.read_text(), re.MULTILINE)
    assert "chown jobpulse:jobpulse /data/uploads" in DOCKERFILE.read_text()


def test_compose_commands_name_real_entry_points() -> None:
    """`arq worker.WorkerSettings` and `uvicorn web.app:app` resolve (neither connects to Redis)."""
    import web.app
    import worker

    assert callable(web.app.create_app)
    assert isinstance(worker.WorkerSettings, dict)
    assert worker.WorkerSettings["functions"]


def test_dockerfile_copies_every_package_and_serves_the_web_app() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", dockerfile, re.MULTILINE)
    assert re.search(r"^USER (?!root\b)\S+$", dockerfile, re.MULTILINE), "the image must not run as root"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include: list[str] = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (pattern.rstrip("*") for pattern in include):
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.MULTILINE), f"{package} not copied"
    assert '"uvicorn", "web.app:app"' in dockerfile
