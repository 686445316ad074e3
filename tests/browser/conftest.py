"""Browser tests: a real Chromium (through Playwright) against the real stack, `uvicorn` and `arq` processes.

One browser per test module and a fresh context (own localStorage) per test. Without Chromium the tests
are skipped, or fail when `CI` is set, since CI must run them. Chromium is `$JOBPULSE_CHROMIUM`, else
`/usr/bin/chromium`, else `chromium` on PATH.
"""

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

from jobpulse.stack.redis_server import RedisServer, free_port
from tests.support.processes import Process, process_env, wait_until_serving, web_process, worker_process

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
VIEWPORT: ViewportSize = {"width": 1100, "height": 800}


def find_chromium() -> tuple[str | None, str]:
    """The Chromium to run, or None and why not."""
    configured = os.environ.get("JOBPULSE_CHROMIUM")
    if configured:
        if Path(configured).is_file():
            return configured, ""
        return None, f"JOBPULSE_CHROMIUM={configured} is not a file"
    found = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
    return found, "Chromium not found: install it (Debian: apt-get install chromium) or set JOBPULSE_CHROMIUM"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path, why_not = find_chromium()
    if path is None:
        reason = f"{why_not}; the browser tests need it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module-scoped here, so one browser serves a whole module's tests on one event loop."""
    return "asyncio"


@pytest.fixture(scope="module")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh context; the test fails if the page's scripts throw."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"the page's scripts threw: {errors}"


@dataclass
class Stack:
    """A worker and a web process for one test, sharing the test's upload directory."""

    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    web: Process | None = None
    worker: Process | None = None
    started: list[Process] = field(default_factory=list)
    webs_started: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_worker(self) -> None:
        self.worker = worker_process(self.env, self.logs / "worker.log").start()
        self.started.append(self.worker)

    def start_web(self) -> None:
        """A web process on the stack's port (the same one after a restart)."""
        self.webs_started += 1
        process, url = web_process(self.env, self.logs / f"web{self.webs_started}.log", self.port)
        self.web = process.start()
        self.started.append(process)
        wait_until_serving(url, process)

    def stop_web(self) -> None:
        """SIGTERM, as a deploy does, and wait for the process to exit."""
        assert self.web is not None
        self.web.stop()

    def stop(self) -> None:
        for process in self.started:
            process.stop()


class StackFactory:
    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.stacks: list[Stack] = []

    async def __call__(self, **settings: Any) -> Stack:
        """Start a stack; `settings` are JOBPULSE_ settings by their lower-case names."""
        uploads = self.tmp_path / "uploads"
        uploads.mkdir(exist_ok=True)
        logs = self.tmp_path / f"logs{len(self.stacks)}"
        logs.mkdir()
        defaults: dict[str, Any] = {
            "queue_name": f"browser:{uuid.uuid4().hex[:8]}",
            "upload_dir": uploads,
            "worker_poll_delay_s": 0.05,
            "sse_retry_ms": 250,
        }
        env = process_env(
            self.redis_url, **{f"JOBPULSE_{k.upper()}": str(v) for k, v in {**defaults, **settings}.items()}
        )
        stack = Stack(env, logs)
        self.stacks.append(stack)
        stack.start_worker()
        await anyio.to_thread.run_sync(stack.start_web)
        return stack

    def stop(self) -> None:
        for stack in self.stacks:
            stack.stop()


@pytest.fixture
def launch(redis_server: RedisServer, tmp_path: Path) -> Iterator[StackFactory]:
    factory = StackFactory(redis_server.url, tmp_path)
    try:
        yield factory
    finally:
        factory.stop()
