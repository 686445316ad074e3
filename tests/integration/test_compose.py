"""docker-compose.yml and the Dockerfile: valid, and running the commands and packages the code has.

Compose is checked with `docker-compose config` (or `docker compose config`), which needs no Docker engine.
Most checks read the file as text; the structure (ports, health checks, dependencies) is read from what
`docker-compose config` resolved, with PyYAML (schemathesis, a dev dependency, brings it).
"""

import functools
import os
import random
import re
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from redis import Redis

from jobpulse.settings import Settings
from jobpulse.stack.processes import stop_processes
from jobpulse.stack.redis_server import find_redis_server
from jobpulse.web.streaming.long_poll import MAX_WAIT_S
from jobpulse.web.upload_receiver import _ENVELOPE_ALLOWANCE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CLUSTER_FILE = ROOT / "docker-compose.cluster.yml"
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


def _compose(*args: str, files: tuple[Path, ...] = (COMPOSE_FILE,)) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_compose_command(), *(f"--file={file}" for file in files), *args],
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


@functools.cache
def _config(files: tuple[Path, ...]) -> str:
    """`docker-compose config`'s output, once per set of files (each run takes a second or so)."""
    result = _compose("config", files=files)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _resolved(files: tuple[Path, ...] = (COMPOSE_FILE,)) -> dict[str, Any]:
    """The services as `docker-compose config` resolves them."""
    services: dict[str, Any] = yaml.safe_load(_config(files))["services"]
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


# docker-compose.cluster.yml: job events and state on a Redis Cluster, on top of docker-compose.yml.

CLUSTER_FILES = (COMPOSE_FILE, CLUSTER_FILE)
CLUSTER_CONF = ROOT / "deploy" / "redis-cluster.conf"
CLUSTER_INIT = ROOT / "deploy" / "redis-cluster-init.sh"
NODES = [f"redis-node-{n}" for n in range(1, 7)]


def _conf(path: Path) -> dict[str, str]:
    """A redis.conf's directives, `name value` lines."""
    lines = [line.split(None, 1) for line in path.read_text().splitlines()]
    return {line[0]: line[1] for line in lines if line and not line[0].startswith("#")}


def test_cluster_file_adds_the_cluster_and_leaves_the_default_alone() -> None:
    """`docker compose up` alone still runs the four services (the tests above); with the second file,
    six nodes and the one-shot init join them, and `redis` stays for the queue."""
    result = _compose("config", "-q", files=CLUSTER_FILES)
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"
    assert set(_resolved(CLUSTER_FILES)) == {"redis", "worker", "web", "proxy", *NODES, "redis-cluster-init"}
    assert "profiles" not in COMPOSE_FILE.read_text()


def test_cluster_nodes_are_durable_named_and_health_checked() -> None:
    services = _resolved(CLUSTER_FILES)
    for name in NODES:
        node = services[name]
        assert node["image"] == services["redis"]["image"], name  # the pinned patch release
        assert node["command"] == (
            f"redis-server /usr/local/etc/redis/cluster.conf --cluster-announce-hostname {name}"
        )
        assert sorted(node["volumes"]) == sorted(
            [f"{name}:/data:rw", f"{CLUSTER_CONF}:/usr/local/etc/redis/cluster.conf:ro"]
        ), name  # its own volume: nodes.conf and the append-only file are per node
        assert node["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"], name
        assert node["restart"] == "unless-stopped", name
        assert "ports" not in node, name


def test_cluster_nodes_persist_and_never_evict_as_the_default_redis_does() -> None:
    conf = _conf(CLUSTER_CONF)
    default = re.findall(r"--([\w-]+) (\S+)", _resolved()["redis"]["command"])
    assert default == [("appendonly", "yes"), ("appendfsync", "everysec"), ("maxmemory-policy", "noeviction")]
    for name, value in default:
        assert conf.get(name) == value, name
    assert conf["cluster-enabled"] == "yes"
    assert conf["port"] == "6379"
    # Clients get the announced service names (resolvable on the compose network), not container IPs.
    assert conf["cluster-preferred-endpoint-type"] == "hostname"
    # docs/fault-model.md: a shard down stops only its own jobs (the clients, too, ask for no full coverage).
    assert conf["cluster-require-full-coverage"] == "no"


def test_cluster_init_runs_once_every_node_answers() -> None:
    init = _resolved(CLUSTER_FILES)["redis-cluster-init"]
    assert init["depends_on"] == {name: {"condition": "service_healthy"} for name in NODES}
    assert init["environment"]["REDIS_CLUSTER_NODES"].split() == [f"{name}:6379" for name in NODES]
    assert init["entrypoint"] == ["sh", "/usr/local/bin/redis-cluster-init"]
    assert init["volumes"] == [f"{CLUSTER_INIT}:/usr/local/bin/redis-cluster-init:ro"]
    # One-shot: it exits when the cluster is ok, so no restart policy and no health check.
    assert init["restart"] == "no" and "healthcheck" not in init


def test_web_and_worker_use_the_cluster_and_keep_the_queue_on_one_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _resolved(CLUSTER_FILES)
    for name in ("web", "worker"):
        service = services[name]
        environment = service["environment"]
        assert environment["REDIS_URL"] == "redis://redis-node-1:6379/0", name
        assert environment["JOBPULSE_REDIS_CLUSTER"] == "1", name
        assert environment["JOBPULSE_QUEUE_REDIS_URL"] == "redis://redis:6379/0", name
        assert service["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "redis-cluster-init": {"condition": "service_completed_successfully"},
        }, name
        assert "healthcheck" in service, name
        for variable in ("REDIS_URL", "JOBPULSE_REDIS_CLUSTER", "JOBPULSE_QUEUE_REDIS_URL"):
            monkeypatch.setenv(variable, environment[variable])
        settings = Settings()  # the names are the settings', and they validate together
        assert settings.redis_cluster and settings.queue_url == "redis://redis:6379/0", name
    assert {name for name, service in services.items() if "healthcheck" not in service} == {
        "redis-cluster-init"
    }
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}


class _Node:
    """One node as docker-compose.cluster.yml runs it (deploy/redis-cluster.conf, its service name
    announced), on its own loopback address and the same port as the others, like containers on a network."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.host = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, host: str, port: int) -> None:
        self.host = host
        self.directory.mkdir(exist_ok=True)
        args = [
            find_redis_server(), str(CLUSTER_CONF),
            "--bind", host,
            # Containers each have their own address; on one host the bus must not leave from 127.0.0.1.
            "--bind-source-addr", host,
            "--port", str(port),
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--cluster-announce-hostname", self.name,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(nodes: list[_Node]) -> None:
    """SIGTERM to all at once, as `docker compose down`: each writes its nodes.conf and exits."""
    stop_processes([node.process for node in nodes if node.process is not None], timeout_s=10)
    for node in nodes:
        node.process = None


def _cluster_port(hosts: list[str]) -> int:
    """A port free, with its cluster bus port (+10000), on every one of these loopback addresses."""
    for _ in range(50):
        port = random.randrange(10000, 22000)
        try:
            for host in hosts:
                for candidate in (port, port + 10000):
                    with socket.socket() as sock:
                        sock.bind((host, candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port on the test's loopback addresses")


def _init(nodes: list[_Node], port: int) -> subprocess.CompletedProcess[str]:
    """deploy/redis-cluster-init.sh as the compose service runs it, the nodes at their current addresses."""
    env = {
        **os.environ,
        "REDIS_CLUSTER_NODES": " ".join(f"{node.host}:{port}" for node in nodes),
        "REDIS_CLUSTER_TIMEOUT_S": "30",
    }
    return subprocess.run(["sh", str(CLUSTER_INIT)], env=env, capture_output=True, text=True, timeout=60)


def _run_init(nodes: list[_Node], port: int) -> str:
    result = _init(nodes, port)
    assert result.returncode == 0, result.stderr
    return result.stderr


def _view(node: _Node, port: int) -> tuple[str, dict[str, tuple[str, str]], list[str]]:
    """One node's view: cluster_state, each node id's (address, role), the endpoints in CLUSTER SLOTS."""
    with Redis(host=node.host, port=port, decode_responses=True, socket_timeout=5) as client:
        info = client.execute_command("CLUSTER", "INFO")
        table = client.execute_command("CLUSTER", "NODES")
        slots = client.execute_command("CLUSTER", "SLOTS")
    (state,) = re.findall(r"^cluster_state:(\w+)", info, re.MULTILINE)
    members = {}
    for line in table.strip().splitlines():
        node_id, address, flags, *_ = line.split()
        role = "primary" if "master" in flags else "replica"
        members[node_id] = (address.split("@")[0], role)
    endpoints = sorted(str(node_info[0]) for entry in slots for node_info in entry[2:])
    return state, members, endpoints


def test_cluster_init_creates_the_cluster_once_and_rejoins_it_at_new_addresses(tmp_path: Path) -> None:
    """deploy/redis-cluster-init.sh against six real nodes: it creates 3 primaries and 3 replicas; run
    again, it creates nothing; after every node comes back at another address (`docker compose down`
    and `up`: new containers, new IPs, the same volumes) it joins them up again; a node that lost its
    volume stops it. Regression: before the re-introduction (CLUSTER MEET at the new addresses) each node
    said cluster_state:ok within seconds of the restart while reaching no peer."""
    if not shutil.which("redis-cli"):
        message = "redis-cli is not installed: `apt-get install redis-tools`"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    a, b = random.randrange(100, 200), random.randrange(0, 200)
    nodes = [_Node(name, tmp_path / name) for name in NODES]
    first_hosts = [f"127.{a}.{b}.{n}" for n in range(1, 7)]
    second_hosts = [f"127.{a}.{b + 1}.{n}" for n in range(1, 7)]
    port = _cluster_port(first_hosts + second_hosts)
    try:
        for node, host in zip(nodes, first_hosts, strict=True):
            node.start(host, port)
        assert "creating the cluster" in _run_init(nodes, port)
        state, members, endpoints = _view(nodes[0], port)
        assert state == "ok"
        assert sorted(role for _, role in members.values()) == ["primary"] * 3 + ["replica"] * 3
        # The announced names, not addresses (a replica is listed once in sync with its primary).
        assert set(NODES[:3]) <= set(endpoints) <= set(NODES)
        assert all(_view(node, port)[:2] == ("ok", members) for node in nodes)  # one view, everywhere

        assert "already a cluster" in _run_init(nodes, port)
        assert all(_view(node, port)[:2] == ("ok", members) for node in nodes)  # nothing was created

        _stop(nodes)
        for node, host in zip(nodes, second_hosts, strict=True):
            node.start(host, port)
        assert "already a cluster" in _run_init(nodes, port)
        for node in nodes:
            state, seen, endpoints = _view(node, port)
            assert state == "ok", node.name
            assert set(seen) == set(members), node.name  # the same nodes, each at its new address
            assert {address for address, _ in seen.values()} == {f"{host}:{port}" for host in second_hosts}
            assert sorted(role for _, role in seen.values()) == ["primary"] * 3 + ["replica"] * 3
            assert set(endpoints) <= set(NODES)

        # A node that lost its volume comes back new under an old name: the init stops and says why.
        lost = nodes[-1]
        _stop([lost])
        shutil.rmtree(lost.directory)
        lost.start(second_hosts[-1], port)
        result = _init(nodes, port)
        assert result.returncode == 1
        assert f"(did they lose their volume?): {lost.host}:{port}." in result.stderr
        assert "--cluster del-node" in result.stderr
    finally:
        _stop(nodes)


def test_the_docs_say_how_to_run_the_cluster_and_link_what_exists() -> None:
    """README's Deploy and docs/DEPLOY.md give the same command and settings as the files, and their
    links to the measured sizing and the cluster section land on headings that exist."""
    readme = (ROOT / "README.md").read_text()
    deploy = " ".join(readme[readme.index("## Deploy\n") :].split("\n## ", 1)[0].split())
    docs = (ROOT / "docs" / "DEPLOY.md").read_text()
    cluster = docs[docs.index("## Redis Cluster\n") :].split("\n## ", 1)[0]
    command = "docker compose -f docker-compose.yml -f docker-compose.cluster.yml up --build -d"
    for text in (deploy, " ".join(cluster.split())):
        assert command in text
        for setting in ("JOBPULSE_REDIS_CLUSTER=1", "JOBPULSE_QUEUE_REDIS_URL", "REDIS_URL"):
            assert setting in text, setting
        assert "SCALING.md#when-one-redis-is-not-enough-measured" in text
    assert "docs/DEPLOY.md#redis-cluster" in deploy
    assert "python-arq/arq/issues/385" in cluster and "python-arq/arq/pull/420" in cluster
    scaling = (ROOT / "docs" / "SCALING.md").read_text()
    assert re.search(r"^### When one Redis is not enough \(measured\)$", scaling, re.MULTILINE)
