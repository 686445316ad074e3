"""The README's two commands and its curl session, run as a newcomer would run them."""

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from jobpulse.stack.redis_server import free_port
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def curl_commands(section: str | None = None) -> list[str]:
    """The curl commands of one `## ` section, or of every section but Security (which needs keys)."""
    sections = re.split(r"^## ", README, flags=re.MULTILINE)
    text = "\n".join(
        part
        for part in sections
        if (part.startswith(section) if section else not part.startswith("Security"))
    )
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            if command.startswith("curl "):
                commands.append(command)
    return commands


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m jobpulse.stack` (what `scripts/up` runs), with no REDIS_URL: it must start its own Redis."""
    yield from run_stack(tmp_path_factory, {})


API_KEY = "readme-key-0123456789"


@pytest.fixture(scope="module")
def locked_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same, started as the Security section says: with an API key and a token secret."""
    env = {"JOBPULSE_API_KEYS": API_KEY, "JOBPULSE_TOKEN_SECRET": "readme-secret-0123456789abcdef"}
    yield from run_stack(tmp_path_factory, env)


def run_stack(tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("redis-data")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("JOBPULSE_")}
    env["JOBPULSE_UPLOAD_DIR"] = str(data / "uploads")
    env.update(extra_env)
    log = (data / "stack.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jobpulse.stack", "--port", str(port), "--data", str(data)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (data / "stack.log").read_text()
            try:
                if httpx.get(f"{url}/openapi.json").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (data / "stack.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
        log.close()
        output = (data / "stack.log").read_text()
        assert code == 0, output
        assert "started a private Redis" in output and "jobpulse: stopped" in output
        assert not (data / "appendonlydir").exists() or any((data / "appendonlydir").iterdir())


def run_curl(command: str, url: str, job_id: str = "ID", upload: Path | None = None) -> str:
    command = command.replace("localhost:8000", url.removeprefix("http://"))
    args = [re.sub(r"/jobs/ID\b", f"/jobs/{job_id}", arg) for arg in shlex.split(command)]
    if upload is not None:
        args = [f"file=@{upload}" if arg == "file=@photo.png" else arg for arg in args]
    result = subprocess.run(
        [*args, "--max-time", "30", "--silent", "--show-error"], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def test_readme_curl_session_works_as_shown(system: str) -> None:
    commands = curl_commands()
    submit, get, long_poll, stream, resume_header, resume_query, cancel, _ = commands
    assert "POST" in submit and "DELETE" in cancel

    job = json.loads(run_curl(submit, system))
    assert job["status"] == "queued" and job["events_url"] == f"/jobs/{job['id']}/events"
    assert json.loads(run_curl(get, system, job["id"]))["id"] == job["id"]

    finished = json.loads(run_curl(long_poll, system, job["id"]))
    assert finished["status"] == "succeeded" and finished["last_event_id"] == 23

    events = run_curl(stream, system, job["id"])
    assert events.startswith(": connected\nretry: 2000\nid: 1\nevent: status\n")
    assert '"status":"succeeded"' in events.rstrip().splitlines()[-1]
    ids = [int(line[4:]) for line in events.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, 24))  # queued, running, 20 x progress, succeeded — as the README shows

    for resume in (resume_header, resume_query):
        rest = run_curl(resume, system, job["id"])
        assert [int(line[4:]) for line in rest.splitlines() if line.startswith("id: ")] == list(range(6, 24))

    other = json.loads(run_curl(submit, system))
    cancelled = json.loads(run_curl(cancel, system, other["id"]))
    assert cancelled["status"] == "cancelled"


def test_readme_security_session_works_as_shown(locked_system: str) -> None:
    submit, long_poll, stream = curl_commands("Security")
    assert "$JOBPULSE_API_KEYS" in submit
    refused = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", f"{locked_system}/jobs"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert refused.stdout == "401"
    job = json.loads(run_curl(submit.replace("$JOBPULSE_API_KEYS", API_KEY), locked_system))
    assert job["status"] == "queued" and job["token"]
    token = job["token"]
    finished = json.loads(run_curl(long_poll.replace("TOKEN", token), locked_system, job["id"]))
    assert finished["status"] == "succeeded"
    events = run_curl(stream.replace("TOKEN", token), locked_system, job["id"])
    assert '"status":"succeeded"' in events.rstrip().splitlines()[-1]
    without_token = run_curl(f"curl -s -w %{{http_code}} localhost:8000/jobs/{job['id']}", locked_system)
    assert without_token.endswith("401")


def test_readme_upload_example_works_as_shown(system: str, tmp_path: Path) -> None:
    (upload,) = [command for command in curl_commands() if "/uploads" in command]
    photo = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), "teal").save(photo)
    job = json.loads(run_curl(upload, system, upload=photo))
    assert job["task"] == "process_upload" and job["status"] == "queued"
    events = run_curl(f"curl -N localhost:8000{job['events_url']}", system)
    done = json.loads(events.rstrip().splitlines()[-1].removeprefix("data: "))
    shown = json.loads(code_blocks("json")[1])
    assert done["status"] == "succeeded"
    assert set(done["result"]) == set(shown)
    assert done["result"]["filename"] == shown["filename"] and done["result"]["image"] == shown["image"]
    assert done["result"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()


def test_readme_watch_job_snippet_is_the_example_pages_script() -> None:
    """The snippet runs in tests/browser as /static/example.html; the README must show that very script."""
    (snippet,) = code_blocks("html")
    example = (ROOT / "web" / "static" / "example.html").read_text()
    assert snippet.strip() in example
    assert snippet.strip().startswith('<script type="module">') and snippet.strip().endswith("</script>")


def python_output(args: list[str], url: str) -> str:
    """What `python ARGS` prints, run as a user would with `JOBPULSE_URL` pointing at `url`."""
    result = subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "JOBPULSE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_cli_session_prints_what_is_shown(system: str) -> None:
    (command,) = [
        line for block in code_blocks("sh") for line in block.splitlines() if line.endswith("--wait | cat")
    ]
    (shown,) = [block for block in code_blocks("text") if block.startswith("status queued\n")]
    args = shlex.split(command.removesuffix(" | cat"))
    assert args[0] == "jobpulse"
    assert python_output(["-m", "jobpulse.cli", *args[1:]], system) == shown


def test_readme_client_example_prints_what_is_shown(system: str) -> None:
    (example,) = [block for block in code_blocks("python") if "from jobpulse.client import Client" in block]
    (shown,) = [block for block in code_blocks("text") if block.startswith("20% step 1/5\n")]
    assert python_output(["-c", example], system) == shown


def test_readme_task_example_is_simulate_minus_its_options() -> None:
    (example,) = [block for block in code_blocks("python") if "async def simulate" in block]
    source = (ROOT / "worker" / "tasks" / "simulate.py").read_text()
    for line in example.splitlines():
        if line.strip() and not line.startswith(("import", "from")):
            assert line in source, f"README line not in worker/tasks/simulate.py: {line!r}"
