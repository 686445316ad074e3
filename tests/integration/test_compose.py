"""docker-compose.yml and the Dockerfile: valid, and running the commands and packages the code has.

Compose is checked with `docker-compose config` (or `docker compose config`), which needs no Docker engine.
Most checks read the file as text; the structure (ports, health checks, dependencies) is read from what
`docker-compose config` resolved, with PyYAML (schemathesis, a dev dependency, brings it).
"""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from jobpulse.settings import Settings
from jobpulse.web.streaming.long_poll import MAX_WAIT_S
from jobpulse.web.upload_receiver import _ENVELOPE_ALLOWANCE

ROOT = Path(__file__).resolve().parents[2]
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
    assert set(result.stdout.split()) == {"redis", "worker", "web", "proxy"}


def test_compose_file_has_no_version_key() -> None:
    """Compose v2 warns that `version:` is obsolete; docker-compose 1.27+ reads the file without it."""
    assert not re.search(r"^version:", COMPOSE_FILE.read_text(), re.MULTILINE)


def test_redis_is_durable_and_health_checked() -> None:
    redis = _service("redis")
    assert re.search(r"^    image: redis:7\.\d+\.\d+-alpine$", redis, re.MULTILINE), "pin a patch release"
    assert "--appendonly yes --appendfsync everysec" in redis
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
    assert re.search(r"^      uvicorn web\.app:app --host 0\.0\.0\.0 --port 8000\b", web, re.MULTILINE)
    assert "REDIS_URL: redis://redis:6379/0" in web
    assert "condition: service_healthy" in web
    assert "healthcheck:" in web
    assert "urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=3)" in web


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

    assert callable(web.app.build)
    assert isinstance(worker.WorkerSettings, dict)
    assert worker.WorkerSettings["functions"]


def test_dockerfile_copies_every_package_and_serves_the_web_app() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", dockerfile, re.MULTILINE), (
        "pin a patch release"
    )
    assert re.search(r"^USER (?!root\b)\S+$", dockerfile, re.MULTILINE), "the image must not run as root"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include: list[str] = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["jobpulse", "jobpulse.*"], "the wheel installs one top-level package"
    # The library, and the reference service the image runs from its working directory.
    for package in ("jobpulse", "web", "worker"):
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.MULTILINE), f"{package} not copied"
    assert '"uvicorn", "web.app:app"' in dockerfile


def _resolved() -> dict[str, Any]:
    """The services as `docker-compose config` resolves them."""
    result = _compose("config")
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def test_only_the_proxy_publishes_a_port_so_web_and_worker_scale() -> None:
    """`docker compose up --scale worker=4 --scale web=2` needs no fixed host port or name on either."""
    services = _resolved()
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert published == {"proxy": [{"published": 8000, "target": 8000}]}, published
    for name, service in services.items():
        assert "container_name" not in service, name
        assert "hostname" not in service, f"{name}: the worker's health check key is named for its host"


def test_workers_serve_metrics_on_the_compose_network_only() -> None:
    """Every worker container on the same port (each has its own address), none published on the host."""
    worker = _resolved()["worker"]
    assert worker["environment"]["JOBPULSE_WORKER_METRICS_PORT"] == "9100"
    assert "ports" not in worker and worker["expose"] == ["9100"]


def test_web_may_hold_thousands_of_streams() -> None:
    """The stream limit follows the open-file limit (web/limits.py): a container's 1,024 would be 768."""
    assert _resolved()["web"]["ulimits"]["nofile"] == {"soft": 65536, "hard": 65536}


def test_every_service_is_health_checked_and_starts_after_what_it_needs() -> None:
    services = _resolved()
    assert all("healthcheck" in service for service in services.values())
    needs = {"worker": {"redis"}, "web": {"redis"}, "proxy": {"web"}}
    for name, dependencies in needs.items():
        depends_on = services[name]["depends_on"]
        assert set(depends_on) == dependencies, name
        assert all(depends_on[d]["condition"] == "service_healthy" for d in dependencies), name
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "arq", "worker.WorkerSettings", "--check"]
    # arq --check retries connecting to a Redis that is down for about 5 s before it gives up.
    assert _seconds(services["worker"]["healthcheck"]["timeout"]) > 5
    assert "/readyz" in services["web"]["healthcheck"]["test"][-1]
    assert services["proxy"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/healthz"


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return int(match.group(1))


def test_web_and_worker_run_one_image() -> None:
    services = _resolved()
    assert services["web"]["image"] == services["worker"]["image"] == "jobpulse"
    assert services["web"]["build"] == services["worker"]["build"]


def test_web_trusts_the_proxys_forwarded_for() -> None:
    """Per-client limits see the client's address only if uvicorn reads the header the proxy sets."""
    command = _resolved()["web"]["command"]
    assert "--proxy-headers --forwarded-allow-ips *" in command
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in NGINX_CONF.read_text()


NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def test_proxy_is_a_pinned_nginx_with_the_repos_config() -> None:
    proxy = _resolved()["proxy"]
    match = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)-alpine", proxy["image"])
    assert match, f"pin a patch release: {proxy['image']}"
    # `server web:8000 resolve` in an upstream (following the replicas) is in open-source nginx since 1.27.3.
    assert tuple(map(int, match.groups())) >= (1, 27, 3)
    assert proxy["volumes"] == [f"{NGINX_CONF}:/etc/nginx/nginx.conf:ro"]
    assert "server web:8000 resolve;" in NGINX_CONF.read_text()
    assert "resolver 127.0.0.11 " in NGINX_CONF.read_text()


def test_proxy_timeouts_and_body_size_fit_the_apps_settings() -> None:
    conf = NGINX_CONF.read_text()
    fields = Settings.model_fields
    events = conf[conf.index("location ~ ^/jobs/[^/]+/events$") :]
    events = events[: events.index("}")]
    assert "proxy_buffering off;" in events and "proxy_cache off;" in events
    # Two keep-alive intervals at the largest JOBPULSE_KEEPALIVE_S allowed: one late one is no drop.
    (keepalive_max,) = [m.le for m in fields["keepalive_s"].metadata if hasattr(m, "le")]
    assert _directive_seconds(events, "proxy_read_timeout") >= 2 * keepalive_max
    # Everything else (the server's level): longer than the longest long-poll, `GET /jobs/{id}?wait=60`.
    server_level = conf[conf.index("server {") : conf.index("location ")]
    assert _directive_seconds(server_level, "proxy_read_timeout") > MAX_WAIT_S
    # The web process answers an over-the-limit upload with its own JSON 413, not nginx's HTML one.
    body = re.search(r"^\s*client_max_body_size (\d+)m;$", conf, re.MULTILINE)
    assert body, "client_max_body_size in MiB"
    assert int(body.group(1)) * 1024 * 1024 >= Settings().max_upload_bytes + _ENVELOPE_ALLOWANCE
    uploads = conf[conf.index("location = /uploads") :]
    assert "proxy_request_buffering off;" in uploads[: uploads.index("}")]


def _directive_seconds(text: str, directive: str) -> int:
    match = re.search(rf"^\s*{directive} (\d+)s;$", text, re.MULTILINE)
    assert match, directive
    return int(match.group(1))


def test_the_proxy_config_stays_out_of_the_image() -> None:
    """The image is the app's; deploy/ is mounted into the official nginx image instead."""
    assert re.search(r"^deploy$", (ROOT / ".dockerignore").read_text(), re.MULTILINE)
    assert not re.search(r"^COPY deploy", DOCKERFILE.read_text(), re.MULTILINE)


def test_the_deploy_docs_name_what_the_files_run() -> None:
    """README's Deploy commands scale services that exist; docs/DEPLOY.md's table shows the pinned images."""
    services = _resolved()
    readme = (ROOT / "README.md").read_text()
    deploy = readme[readme.index("## Deploy\n") :]
    (commands,) = re.findall(r"```sh\n(.*?)```", deploy[: deploy.index("\n## ", 1)], flags=re.DOTALL)
    scaled = re.findall(r"--scale (\w+)=\d+", commands)
    assert scaled == ["worker", "web"] and set(scaled) <= set(services)
    logged = re.search(r"docker compose logs -f ((?:\w+ ?)+)", commands)
    assert logged and set(logged.group(1).split()) <= set(services)
    docs = (ROOT / "docs" / "DEPLOY.md").read_text()
    for name in ("redis", "proxy"):
        assert re.search(rf"^\| `{name}` \| `{re.escape(services[name]['image'])}`", docs, re.MULTILINE), name
    (base,) = re.findall(r"^FROM (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert f"`{base}`" in docs
