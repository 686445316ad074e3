"""deploy/nginx.conf run by a real nginx in front of two real web processes and a worker.

The config is the repository's, with only what cannot work outside Docker replaced: the upstream's
`server web:8000 resolve;` (Docker's DNS) by the two web processes, the listening port, and the pid and
temporary paths. Without nginx these tests are skipped, except in CI (`CI` set), where they fail:
`apt-get install nginx` (.ci/run does).
"""

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobpulse.stack.processes import stop_process
from jobpulse.stack.redis_server import RedisServer, free_port
from tests.support.processes import (
    ROOT,
    Process,
    process_env,
    wait_until_serving,
    web_process,
    worker_process,
)

pytestmark = pytest.mark.slow

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
UPLOAD_LIMIT = 4 * 1024 * 1024  # the web processes' JOBPULSE_MAX_UPLOAD_BYTES here


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _nginx() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = "nginx is not installed: `apt-get install nginx` on Debian/Ubuntu."
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


def local_config(conf: str, prefix: Path, port: int, upstreams: list[int]) -> str:
    """deploy/nginx.conf for this machine: upstreams on 127.0.0.1, our port, files under `prefix`."""
    servers = "\n".join(f"        server 127.0.0.1:{upstream};" for upstream in upstreams)
    replacements = [
        (r"^        server web:8000 resolve;$", servers),
        (r"^        listen 8000;$", f"        listen 127.0.0.1:{port};"),
        (r"^worker_processes auto;$", f"worker_processes auto;\npid {prefix}/nginx.pid;"),
        (
            r"^http \{$",
            "http {\n"
            + "".join(
                f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
        ),
    ]
    for pattern, replacement in replacements:
        conf, count = re.subn(pattern, replacement, conf, flags=re.MULTILINE)
        assert count == 1, f"deploy/nginx.conf no longer has {pattern!r}: update this test"
    if os.geteuid() == 0:
        conf = "user root;\n" + conf  # the workers must reach the temporary files under pytest's tmp_path
    return conf


@dataclass
class Proxied:
    url: str
    webs: list[Process]
    worker: Process


@pytest.fixture(scope="module")
def proxied(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    nginx = _nginx()
    tmp = tmp_path_factory.mktemp("nginx")
    env = process_env(
        redis_server.url,
        JOBPULSE_QUEUE_NAME=f"test:{uuid.uuid4().hex[:8]}",
        JOBPULSE_UPLOAD_DIR=str(tmp / "uploads"),
        JOBPULSE_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
        # As docker-compose.yml starts the web: X-Forwarded-For trusted from any peer.
        FORWARDED_ALLOW_IPS="*",
    )
    processes: list[Process] = []
    nginx_process: subprocess.Popen[bytes] | None = None
    try:
        webs, ports = [], []
        for index in range(2):
            port = free_port()
            web, url = web_process(env, tmp / f"web{index}.log", port)
            processes.append(web.start())
            webs.append(web)
            ports.append(port)
        worker = worker_process(env, tmp / "worker.log").start()
        processes.append(worker)
        for web, port in zip(webs, ports, strict=True):
            wait_until_serving(f"http://127.0.0.1:{port}", web)

        port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(local_config(NGINX_CONF.read_text(), tmp, port, ports))
        log = (tmp / "nginx.log").open("wb")
        args = [nginx, "-p", str(tmp), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]
        nginx_process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            assert nginx_process.poll() is None, (tmp / "nginx.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp / "nginx.log").read_text()
            time.sleep(0.05)
        yield Proxied(url, webs, worker)
    finally:
        if nginx_process is not None:
            stop_process(nginx_process, 10)
        for process in reversed(processes):
            process.stop()


def submit(client: httpx.Client, **params: int) -> str:
    response = client.post("/jobs", json={"task": "simulate", "params": params})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def timed_events(client: httpx.Client, job_id: str) -> tuple[httpx.Headers, list[tuple[float, str]]]:
    """Each line of the job's stream with the time it arrived, until the stream ends."""
    lines: list[tuple[float, str]] = []
    with client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append((time.monotonic(), line))
    return response.headers, lines


def test_events_arrive_one_by_one_through_the_proxy(proxied: Proxied) -> None:
    with httpx.Client(base_url=proxied.url, timeout=30) as client:
        job_id = submit(client, steps=4, interval_ms=300, start_delay_ms=500)
        opened = time.monotonic()
        headers, lines = timed_events(client, job_id)
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-accel-buffering"] == "no"  # the events location matched
    assert "content-encoding" not in headers
    # The stream's opening comment comes at once, not with the first event half a second later.
    assert lines[0][1] == ": connected" and lines[0][0] - opened < 0.4
    progress = [at for at, line in lines if line == "event: progress"]
    assert len(progress) == 4
    # 300 ms apart at the source; buffered, they would arrive together at the end.
    gaps = [later - earlier for earlier, later in itertools.pairwise(progress)]
    assert all(gap > 0.15 for gap in gaps), gaps
    assert last_data(lines)["status"] == "succeeded"


def last_data(lines: list[tuple[float, str]]) -> dict[str, Any]:
    """The JSON of the stream's last `data:` line: the terminal status."""
    data: dict[str, Any] = json.loads([line for _, line in lines if line.startswith("data: ")][-1][6:])
    return data


def web_log_lines(web: Process, marker: str) -> list[str]:
    return [line for line in web.output().splitlines() if marker in line]


def test_requests_are_spread_over_both_web_processes(proxied: Proxied) -> None:
    marker = uuid.uuid4().hex
    with httpx.Client(base_url=proxied.url, timeout=10) as client:
        for _ in range(10):
            assert client.get(f"/healthz?probe={marker}").status_code == 200
    deadline = time.monotonic() + 5
    while (counts := [len(web_log_lines(web, marker)) for web in proxied.webs]) and sum(counts) < 10:
        assert time.monotonic() < deadline, counts
        time.sleep(0.05)
    assert all(count >= 3 for count in counts), counts


def test_metrics_are_not_served_on_the_public_side(proxied: Proxied) -> None:
    with httpx.Client(base_url=proxied.url, timeout=10) as client:
        assert client.get("/metrics").status_code == 404
    # Behind the proxy, on the private network, Prometheus scrapes each web process directly.
    web_port = proxied.webs[0].args[proxied.webs[0].args.index("--port") + 1]
    assert httpx.get(f"http://127.0.0.1:{web_port}/metrics", timeout=10).status_code == 200


def test_the_web_sees_the_clients_address_not_one_it_claims(proxied: Proxied) -> None:
    """The proxy replaces X-Forwarded-For: a client cannot pick the address its per-client limits use.

    The client connects from 127.0.0.2 and claims 203.0.113.7; the web trusts the header from any peer
    (as in docker-compose.yml), so what uvicorn logs is what the proxy put there.
    """
    marker = uuid.uuid4().hex
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=proxied.url, timeout=10, transport=transport) as client:
        response = client.get(f"/healthz?probe={marker}", headers={"X-Forwarded-For": "203.0.113.7"})
        assert response.status_code == 200
    deadline = time.monotonic() + 5
    while not (logged := [line for web in proxied.webs for line in web_log_lines(web, marker)]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (line,) = logged
    assert "127.0.0.2:" in line and "203.0.113.7" not in line, line


def test_uploads_go_through_and_the_webs_413_comes_back(proxied: Proxied, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    with httpx.Client(base_url=proxied.url, timeout=30) as client:
        response = client.post("/uploads", files={"file": ("random.bin", data)})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        _, lines = timed_events(client, job_id)
        done = last_data(lines)
        assert done["status"] == "succeeded", done
        assert done["result"] == {
            **done["result"],
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

        too_large = client.post("/uploads", files={"file": ("big.bin", b"x" * (UPLOAD_LIMIT + 1))})
        assert too_large.status_code == 413
        assert "JOBPULSE_MAX_UPLOAD_BYTES" in too_large.json()["detail"]  # the web's answer, not nginx's
