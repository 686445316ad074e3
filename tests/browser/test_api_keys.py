"""The upload page at `/` on a server with API keys (`JOBPULSE_API_KEYS`), in Chromium, against real web
and worker processes.

The page asks for a key, keeps it in sessionStorage only, sends it with uploads and cancels, and reads
each job (its state, its event stream) with the job's own token from the upload's answer, which the saved
cards keep so that a reload resumes them.
"""

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Page, Request, expect

from tests.browser.conftest import Stack, StackFactory
from tests.browser.upload_page import (
    SLOW_BYTES_PER_S,
    bar_value,
    card,
    non_decreasing,
    open_page,
    processing_bar,
    random_file,
    sample_bar,
    samples,
    sha256,
    tab_to,
    upload,
    upload_bar,
    wait_for_bar,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

API_KEY = "browser-test-key-7Qm2"
TOKEN_SECRET = "0123456789abcdef0123456789abcdef"  # 32 characters
NO_KEY_TEXT = "this server needs an API key"
KEY_REFUSED_TEXT = "API key is missing or was not accepted"


async def launch_with_keys(launch: StackFactory, api_key: str = API_KEY, **settings: Any) -> Stack:
    return await launch(api_keys=api_key, token_secret=TOKEN_SECRET, **settings)


class Requests:
    """Every request the page makes, to check what each one carried."""

    def __init__(self, page: Page) -> None:
        self.all: list[Request] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        self.all.append(request)

    def to(self, method: str, path_part: str) -> list[Request]:
        return [r for r in self.all if r.method == method and path_part in urlsplit(r.url).path]

    def streams(self, job_id: str) -> list[Request]:
        return [r for r in self.to("GET", f"/jobs/{job_id}/events") if r.resource_type == "eventsource"]

    def job_reads(self, job_id: str) -> list[Request]:
        return [r for r in self.to("GET", f"/jobs/{job_id}") if urlsplit(r.url).path == f"/jobs/{job_id}"]


def query(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url).query)


async def authorization(request: Request) -> str | None:
    value: str | None = (await request.all_headers()).get("authorization")
    return value


async def job_state(stack: Stack, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        response = await client.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {API_KEY}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def saved_uploads(page: Page) -> list[dict[str, Any]]:
    saved: list[dict[str, Any]] = json.loads(
        await page.evaluate("localStorage.getItem('jobpulse.uploads') ?? '[]'")
    )
    return saved


async def enter_key(page: Page, key: str) -> None:
    await page.get_by_label("API key").fill(key)


async def test_without_a_key_nothing_is_sent(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch_with_keys(launch)
    notes = random_file(tmp_path / "notes.bin", 20_000)
    requests = Requests(page)
    await open_page(page, stack)
    key_field = page.get_by_label("API key")
    await expect(key_field).to_be_visible()
    assert await key_field.get_attribute("type") == "password"

    await page.locator("#file-input").set_input_files(str(notes))
    refused = card(page, "notes.bin")
    await expect(refused.locator(".badge")).to_have_text("Upload failed")
    await expect(refused.locator(".problem")).to_contain_text(NO_KEY_TEXT)
    await expect(key_field).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#api-key-problem")).to_have_text("Enter the API key to upload files.")
    assert requests.to("POST", "/uploads") == [], "the file was sent without a key"
    assert os.listdir(tmp_path / "uploads") == []

    # The field is reached and filled from the keyboard; then Retry sends the file with the key.
    await tab_to(page, "document.activeElement.id === 'api-key'", "the API key field")
    await page.keyboard.type(API_KEY)
    await expect(key_field).not_to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#api-key-problem")).to_be_hidden()
    await page.get_by_role("button", name="Retry notes.bin").click()
    await expect(refused.locator(".badge")).to_have_text("Done", timeout=30_000)
    await expect(refused.locator("code")).to_have_text(sha256(notes))

    # The key is kept for this tab only, never with the saved uploads.
    assert await page.evaluate("sessionStorage.getItem('jobpulse.apiKey')") == API_KEY
    assert API_KEY not in json.dumps(await page.evaluate("({...localStorage})"))


async def test_a_wrong_key_is_refused_in_words(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch_with_keys(launch)
    notes = random_file(tmp_path / "notes.bin", 20_000)
    await open_page(page, stack)
    await enter_key(page, "not-the-key")
    [answer] = await upload(page, notes)
    assert answer["detail"]  # the server's 401
    refused = card(page, "notes.bin")
    await expect(refused.locator(".badge")).to_have_text("Upload failed")
    await expect(refused.locator(".problem")).to_have_text(
        "Upload failed: The API key is missing or was not accepted. Check it above, then retry."
    )
    await expect(page.locator("#api-key-problem")).to_contain_text("did not accept this API key")
    assert os.listdir(tmp_path / "uploads") == []


async def test_with_the_key_a_file_is_uploaded_and_followed_with_its_token(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    stack = await launch_with_keys(launch, upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    data = random_file(tmp_path / "data.bin", 3 * SLOW_BYTES_PER_S)
    requests = Requests(page)
    await sample_bar(page, "Processing of data.bin")
    await open_page(page, stack)
    await enter_key(page, API_KEY)
    [job] = await upload(page, data)
    assert job["token"], "the server answered without a token: are keys on?"
    await expect(upload_bar(page, "data.bin")).to_have_js_property("value", 100)
    await expect(processing_bar(page, "data.bin")).to_have_js_property("value", 100, timeout=30_000)
    done = card(page, "data.bin")
    await expect(done.locator(".badge")).to_have_text("Done")
    await expect(done.locator("code")).to_have_text(sha256(data))

    [posted] = requests.to("POST", "/uploads")
    assert await authorization(posted) == f"Bearer {API_KEY}"
    # The progress arrived live, on an event stream opened with the job's token (never the key).
    values = await samples(page)
    assert non_decreasing(values) and values[-1] == 100, values
    assert any(0 < value < 100 for value in values), "the bar never showed the job under way"
    streams = requests.streams(job["id"])
    assert streams, "the page never opened the job's event stream"
    for stream in streams:
        assert query(stream)["token"] == [job["token"]]
        response = await stream.response()
        assert response is not None and response.status == 200
    for request in requests.all:
        assert API_KEY not in request.url
    assert [entry["token"] for entry in await saved_uploads(page)] == [job["token"]]


async def test_a_reload_resumes_with_the_saved_token(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    stack = await launch_with_keys(launch, upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    slow = random_file(tmp_path / "slow.bin", 8 * SLOW_BYTES_PER_S)
    await sample_bar(page, "Processing of slow.bin")
    await open_page(page, stack)
    await enter_key(page, API_KEY)
    [job] = await upload(page, slow)
    await wait_for_bar(processing_bar(page, "slow.bin"), 15)
    before = await samples(page)

    # A reload keeps the key (same tab); a cleared sessionStorage (as in a new tab) shows that reading the
    # job needs only the token the card saved.
    await page.reload()
    await expect(page.get_by_label("API key")).to_have_value(API_KEY)
    await page.evaluate("sessionStorage.clear()")
    requests = Requests(page)
    await page.reload()
    await expect(page.get_by_label("API key")).to_have_value("")
    await expect(processing_bar(page, "slow.bin")).to_have_js_property("value", 100, timeout=30_000)
    after = await samples(page)
    assert non_decreasing(before) and non_decreasing(after), (before, after)
    assert after[0] >= before[-1] > 0, "the bar started again below where it was"
    await expect(card(page, "slow.bin").locator("code")).to_have_text(sha256(slow))
    # The restored card asked for its job's state with the token, then resumed its stream from there.
    reads = requests.job_reads(job["id"])
    assert reads and all([await authorization(read) == f"Bearer {job['token']}" for read in reads])
    streams = requests.streams(job["id"])
    assert streams, "the restored card never went live"
    assert query(streams[0])["token"] == [job["token"]]
    assert int(query(streams[0])["last_event_id"][0]) > 0, "the stream was replayed from the start"

    # A finished job's card comes back with its result, read with the token.
    requests = Requests(page)
    await page.reload()
    finished = card(page, "slow.bin")
    await expect(finished.locator(".badge")).to_have_text("Done")
    await expect(finished.locator("code")).to_have_text(sha256(slow))
    await expect(processing_bar(page, "slow.bin")).to_have_js_property("value", 100)
    [read] = requests.job_reads(job["id"])
    assert await authorization(read) == f"Bearer {job['token']}"


async def submit(stack: Stack, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        response = await client.post(
            "/jobs",
            json={"task": "simulate", "params": params},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job


async def save_cards(page: Page, stack: Stack, saved: list[dict[str, Any]]) -> None:
    await page.goto(f"{stack.url}/static/favicon.svg")  # any page of the origin, for its storage
    await page.evaluate("(saved) => localStorage.setItem('jobpulse.uploads', JSON.stringify(saved))", saved)


async def test_a_saved_card_whose_token_is_refused_says_so(page: Page, launch: StackFactory) -> None:
    """A token from another secret (or an expired one) reads nothing: the card says so, once."""
    stack = await launch_with_keys(launch)
    job = await submit(stack, steps=2, interval_ms=0)
    await save_cards(
        page,
        stack,
        [{"jobId": job["id"], "name": "old.txt", "size": 1200, "batch": 1, "index": 0, "token": "1.forged"}],
    )
    await open_page(page, stack)
    refused = card(page, "old.txt")
    await expect(refused.locator(".badge")).to_have_text("No access")
    await expect(refused).to_contain_text("access token has expired or is not accepted")
    await page.get_by_role("button", name="Dismiss old.txt").click()
    await expect(refused).to_have_count(0)


async def test_a_card_saved_without_a_token_is_read_with_the_key(page: Page, launch: StackFactory) -> None:
    """Saved before the server had keys: no token, so the card polls its job with the API key."""
    stack = await launch_with_keys(launch)
    job = await submit(stack, steps=25, interval_ms=200)
    await save_cards(
        page, stack, [{"jobId": job["id"], "name": "old.txt", "size": 1200, "batch": 1, "index": 0}]
    )
    await open_page(page, stack)
    without_key = card(page, "old.txt")
    await expect(without_key.locator(".badge")).to_have_text("No access")
    await expect(without_key).to_contain_text("The server now needs an API key to show this job")

    await enter_key(page, API_KEY)
    requests = Requests(page)
    await page.reload()
    resumed = card(page, "old.txt")
    await expect(processing_bar(page, "old.txt")).to_have_js_property("value", 100, timeout=30_000)
    await expect(resumed.locator(".badge")).to_have_text("Done")
    reads = requests.job_reads(job["id"])
    assert len(reads) > 1, "the card should have followed the running job by polling"
    assert all([await authorization(read) == f"Bearer {API_KEY}" for read in reads])
    assert requests.streams(job["id"]) == [], "no stream: the key never goes in a URL"


async def test_cancel_sends_the_key(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch_with_keys(launch, upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    slow = random_file(tmp_path / "slow.bin", 8 * SLOW_BYTES_PER_S)
    requests = Requests(page)
    await open_page(page, stack)
    await enter_key(page, API_KEY)
    [job] = await upload(page, slow)
    await wait_for_bar(processing_bar(page, "slow.bin"), 5)
    cancel = page.get_by_role("button", name="Cancel slow.bin")
    running = card(page, "slow.bin")

    # With a wrong key the server refuses, and the card says why; the job runs on.
    await enter_key(page, "not-the-key")
    await cancel.click()
    await expect(running.locator(".problem")).to_contain_text(f"Could not cancel: the {KEY_REFUSED_TEXT}")
    assert (await job_state(stack, job["id"]))["status"] == "running"

    await enter_key(page, API_KEY)
    await cancel.click()
    await expect(running.locator(".badge")).to_have_text("Cancelled")
    await expect(running).to_contain_text("the server stopped processing this file")
    assert (await job_state(stack, job["id"]))["status"] == "cancelled"
    assert await bar_value(processing_bar(page, "slow.bin")) < 100
    deletes = requests.to("DELETE", f"/jobs/{job['id']}")
    assert [await authorization(r) for r in deletes] == ["Bearer not-the-key", f"Bearer {API_KEY}"]


async def test_too_many_uploads_are_said_in_words(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    """A 429 (over `JOBPULSE_SUBMISSIONS_PER_MINUTE`) reads as a sentence, with when to try again."""
    key = f"rate-{uuid.uuid4().hex}"  # the limit is per key, and the session's Redis outlives this test
    stack = await launch_with_keys(launch, api_key=key, submissions_per_minute=1)
    first = random_file(tmp_path / "first.bin", 10_000)
    second = random_file(tmp_path / "second.bin", 10_000)
    await open_page(page, stack)
    await enter_key(page, key)
    await upload(page, first)
    await expect(card(page, "first.bin").locator(".badge")).to_have_text("Done", timeout=30_000)
    await upload(page, second)
    refused = card(page, "second.bin")
    await expect(refused.locator(".badge")).to_have_text("Upload failed")
    await expect(refused.locator(".problem")).to_have_text(
        re.compile(r"^Upload failed: Too many uploads in the last minute\. Try again in \d+ s\.$")
    )
    await expect(page.get_by_role("button", name="Retry second.bin")).to_be_visible()


# Watches a job with watchJob and the `token` option; resolves with the callbacks made once it is over.
WATCH_WITH_TOKEN = """
async ([url, token, lastEventId]) => {
  const { watchJob } = await import("/static/jobpulse.js");
  return await new Promise((resolve) => {
    const calls = [];
    watchJob(url, {
      token,
      lastEventId,
      onProgress: (event) => calls.push(["progress", event.progress]),
      onStatus: (event) => calls.push(["status", event.status]),
      onDone: (event) => { calls.push(["done", event.status]); setTimeout(() => resolve(calls), 300); },
      onError: (error) => { calls.push(["error", error.status]); setTimeout(() => resolve(calls), 300); },
    });
  });
}
"""


async def test_watch_job_reads_a_job_with_its_token(page: Page, launch: StackFactory) -> None:
    """jobpulse.js's `token` option: on the stream's URL, and as a Bearer header when it asks the job's
    state (here after the end, when the stream answers 204); a wrong one ends the watch with a 401."""
    stack = await launch_with_keys(launch)
    job = await submit(stack, steps=3, interval_ms=0)
    await page.goto(stack.url)
    calls = await page.evaluate(WATCH_WITH_TOKEN, [job["events_url"], job["token"], 0])
    assert calls[-2:] == [["status", "succeeded"], ["done", "succeeded"]], calls
    last_event_id = (await job_state(stack, job["id"]))["last_event_id"]
    requests = Requests(page)
    again = await page.evaluate(WATCH_WITH_TOKEN, [job["events_url"], job["token"], last_event_id])
    assert again == [["status", "succeeded"], ["done", "succeeded"]]
    [stream] = requests.streams(job["id"])
    assert query(stream) == {"token": [job["token"]], "last_event_id": [str(last_event_id)]}
    [read] = requests.job_reads(job["id"])
    assert await authorization(read) == f"Bearer {job['token']}"
    assert await page.evaluate(WATCH_WITH_TOKEN, [job["events_url"], "1.forged", 0]) == [["error", 401]]
    assert await page.evaluate(WATCH_WITH_TOKEN, [job["events_url"], None, 0]) == [["error", 401]]


async def test_without_keys_there_is_no_key_field(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch()
    notes = random_file(tmp_path / "notes.bin", 20_000)
    requests = Requests(page)
    await open_page(page, stack)
    await expect(page.locator("#api-key-form")).to_be_hidden()
    [job] = await upload(page, notes)
    assert job["token"] is None
    await expect(card(page, "notes.bin").locator(".badge")).to_have_text("Done", timeout=30_000)
    [posted] = requests.to("POST", "/uploads")
    assert await authorization(posted) is None
    for stream in requests.streams(job["id"]):
        assert "token" not in query(stream)
    assert "token" not in (await saved_uploads(page))[0]
