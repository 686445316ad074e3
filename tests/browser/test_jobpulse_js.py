"""The drop-in client `/static/jobpulse.js` and its example page, in Chromium, against the real stack."""

from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Stack, StackFactory

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# Watches `url` with watchJob and resolves with every callback made, in order, once the watch is over.
WATCH = """
async ([url, lastEventId]) => {
  const { watchJob } = await import("/static/jobpulse.js");
  return await new Promise((resolve) => {
    const calls = [];
    watchJob(url, {
      lastEventId,
      onProgress: (event) => calls.push(["progress", event.progress]),
      onStatus: (event) => calls.push(["status", event.status]),
      onConnection: (state) => calls.push(["connection", state]),
      onLost: (event) => calls.push(["lost", event.first_retained_id]),
      onDone: (event) => { calls.push(["done", event.status]); setTimeout(() => resolve(calls), 300); },
      onError: (error) => { calls.push(["error", error.message]); setTimeout(() => resolve(calls), 300); },
    });
  });
}
"""


async def submit(stack: Stack, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        response = await client.post("/jobs", json={"task": "simulate", "params": params})
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job


async def watch(page: Page, url: str, last_event_id: int = 0) -> list[list[Any]]:
    calls: list[list[Any]] = await page.evaluate(WATCH, [url, last_event_id])
    return calls


def kinds(calls: list[list[Any]], kind: str) -> list[Any]:
    return [value for name, value in calls if name == kind]


async def test_the_example_page_shows_a_job_to_its_end(page: Page, launch: StackFactory) -> None:
    stack = await launch()
    job = await submit(stack, steps=20, interval_ms=50)
    await page.goto(f"{stack.url}/static/example.html?job={job['id']}")
    await expect(page.get_by_role("progressbar", name="Progress")).to_have_js_property("value", 100)
    await expect(page.locator("#status")).to_have_text("succeeded")


async def test_watch_job_delivers_each_event_once_in_order(page: Page, launch: StackFactory) -> None:
    stack = await launch(progress_interval_ms=0)
    job = await submit(stack, steps=10, interval_ms=20)
    await page.goto(stack.url)
    calls = await watch(page, job["events_url"])
    assert kinds(calls, "progress") == [10 * step for step in range(1, 11)]
    assert kinds(calls, "status") == ["queued", "running", "succeeded"]
    assert kinds(calls, "done") == ["succeeded"]
    assert kinds(calls, "connection") == ["connecting", "open", "closed"]


async def test_watch_job_resuming_after_the_end_reports_the_end(page: Page, launch: StackFactory) -> None:
    """The stream answers 204 to the terminal event's id; the job's state says how it ended."""
    stack = await launch()
    job = await submit(stack, steps=3, interval_ms=0)
    await page.goto(stack.url)
    first = await watch(page, job["events_url"])
    assert kinds(first, "done") == ["succeeded"]
    async with httpx.AsyncClient(base_url=stack.url) as client:
        last_event_id = (await client.get(f"/jobs/{job['id']}")).json()["last_event_id"]
    again = await watch(page, job["events_url"], last_event_id)
    assert kinds(again, "progress") == []
    assert kinds(again, "status") == ["succeeded"]
    assert kinds(again, "done") == ["succeeded"]


async def test_watch_job_of_an_unknown_job_is_an_error(page: Page, launch: StackFactory) -> None:
    stack = await launch()
    await page.goto(stack.url)
    calls = await watch(page, "/jobs/AAAAAAAAAAAAAAAAAAAAAA/events")
    assert kinds(calls, "error") == ["job not found"]
    assert kinds(calls, "done") == []


async def test_watch_job_says_when_events_were_trimmed_and_carries_on(
    page: Page, launch: StackFactory
) -> None:
    stack = await launch(stream_maxlen=10, progress_interval_ms=0)
    job = await submit(stack, steps=30, interval_ms=0)
    await page.goto(stack.url)
    await watch(page, job["events_url"])  # to the end: the history is trimmed to the last 10 events
    calls = await watch(page, job["events_url"], 1)
    [first_retained] = kinds(calls, "lost")
    assert first_retained == 24
    # Events 24 to 32 are progress for steps 22 to 30; 33 is the end.
    assert kinds(calls, "progress") == pytest.approx([100 * step / 30 for step in range(22, 31)])
    assert kinds(calls, "done") == ["succeeded"]
