"""Finding and driving the upload page's parts in Chromium, as a screen reader would: by role and name."""

import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from playwright.async_api import Locator, Page, Response, expect

from tests.browser.conftest import Stack

# Processing reads uploads no faster than this in tests that need a job to be under way for a while.
SLOW_BYTES_PER_S = 400_000

# Records the value of the progress bar labelled `name` every 20 ms, from the moment the page loads.
SAMPLER = """
(name) => {
  window.__samples = [];
  setInterval(() => {
    for (const label of document.querySelectorAll("label")) {
      if (label.control && label.textContent.replace(/\\s+/g, " ").trim() === name) {
        window.__samples.push(label.control.value);
      }
    }
  }, 20);
}
"""


def card(page: Page, name: str) -> Locator:
    return page.get_by_role("article", name=name)


def upload_bar(page: Page, name: str) -> Locator:
    return page.get_by_role("progressbar", name=f"Upload of {name}")


def processing_bar(page: Page, name: str) -> Locator:
    return page.get_by_role("progressbar", name=f"Processing of {name}")


async def bar_value(bar: Locator) -> float:
    value: float = await bar.evaluate("(progress) => progress.value")
    return value


async def wait_for_bar(bar: Locator, at_least: float, timeout_s: float = 30) -> float:
    with anyio.fail_after(timeout_s):
        while (value := await bar_value(bar)) < at_least:
            await anyio.sleep(0.02)
    return value


async def sample_bar(page: Page, name: str) -> None:
    await page.add_init_script(script=f"({SAMPLER})({json.dumps(name)})")


async def samples(page: Page) -> list[float]:
    values: list[float] = await page.evaluate("window.__samples")
    return values


def non_decreasing(values: list[float]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(values))


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(random.Random(path.name).randbytes(size))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def upload(page: Page, *paths: Path) -> list[dict[str, Any]]:
    """Pick `paths` in the file input; returns the jobs the server answered with, in order of answer."""
    jobs: list[dict[str, Any]] = []
    answered = anyio.Event()

    async def on_response(response: Response) -> None:
        if response.url.endswith("/uploads") and response.request.method == "POST":
            jobs.append(await response.json())
            if len(jobs) == len(paths):
                answered.set()

    page.on("response", on_response)
    await page.locator("#file-input").set_input_files([str(path) for path in paths])
    with anyio.fail_after(30):
        await answered.wait()
    page.remove_listener("response", on_response)
    return jobs


async def tab_to(page: Page, focused: str, what: str, presses: int = 10) -> None:
    """Press Tab until the JavaScript expression `focused` is true, as a keyboard user would."""
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate(focused):
            return
    pytest.fail(f"Tab never reached {what}")


async def open_page(page: Page, stack: Stack) -> None:
    await page.goto(stack.url)
    await expect(page.get_by_role("heading", name="Uploads")).to_be_visible()


async def job_state(stack: Stack, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        response = await client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
