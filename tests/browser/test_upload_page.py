"""The upload page at `/`, in Chromium, against real web and worker processes.

Elements are found by role and accessible name ("Processing of photo.png", "Cancel photo.png"), as a
screen reader finds them, so these tests also hold the page to being accessible.
"""

import os
from pathlib import Path

import anyio
import pytest
from PIL import Image, ImageDraw
from playwright.async_api import FileChooser, Page, expect
from redis.asyncio import Redis

from jobpulse.stack.redis_server import RedisServer
from tests.browser.conftest import StackFactory
from tests.browser.upload_page import (
    SLOW_BYTES_PER_S,
    bar_value,
    card,
    job_state,
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


async def test_a_large_upload_fills_both_bars_and_shows_its_sha256(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    stack = await launch()
    big = random_file(tmp_path / "big.bin", 6 * 1024 * 1024)
    await open_page(page, stack)
    await upload(page, big)
    await expect(upload_bar(page, "big.bin")).to_have_js_property("value", 100)
    await expect(processing_bar(page, "big.bin")).to_have_js_property("value", 100, timeout=30_000)
    done = card(page, "big.bin")
    await expect(done.locator(".badge")).to_have_text("Done")
    await expect(done.locator("code")).to_have_text(sha256(big))
    await expect(done).to_contain_text("6,291,456 bytes")


async def test_cancel_stops_the_job(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch(upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    slow = random_file(tmp_path / "slow.bin", 8 * SLOW_BYTES_PER_S)
    await open_page(page, stack)
    [job] = await upload(page, slow)
    await wait_for_bar(processing_bar(page, "slow.bin"), 5)
    await page.get_by_role("button", name="Cancel slow.bin").click()
    cancelled = card(page, "slow.bin")
    await expect(cancelled.locator(".badge")).to_have_text("Cancelled")
    await expect(cancelled).to_contain_text("the server stopped processing this file")
    assert (await job_state(stack, job["id"]))["status"] == "cancelled"
    assert await bar_value(processing_bar(page, "slow.bin")) < 100
    await expect(page.get_by_role("button", name="Cancel slow.bin")).to_be_hidden()
    await page.get_by_role("button", name="Dismiss slow.bin").click()
    await expect(cancelled).to_have_count(0)


async def test_a_failed_job_says_why(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n\xff\xfe\x00\x81\n")
    await open_page(page, stack)
    await upload(page, bad)
    failed = card(page, "bad.csv")
    await expect(failed.locator(".badge")).to_have_text("Failed")
    await expect(failed.locator(".problem")).to_contain_text("Processing failed:")
    await expect(failed.locator(".problem")).to_contain_text("not UTF-8 text")
    await expect(page.locator("#announcer")).to_contain_text("bad.csv: processing failed.")


async def test_restarting_the_web_process_mid_job_loses_no_progress(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    stack = await launch(upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    slow = random_file(tmp_path / "slow.bin", 8 * SLOW_BYTES_PER_S)
    await sample_bar(page, "Processing of slow.bin")
    await open_page(page, stack)
    await upload(page, slow)
    at_restart = await wait_for_bar(processing_bar(page, "slow.bin"), 15)
    await anyio.to_thread.run_sync(stack.stop_web)
    await anyio.to_thread.run_sync(stack.start_web)
    await expect(processing_bar(page, "slow.bin")).to_have_js_property("value", 100, timeout=30_000)
    await expect(card(page, "slow.bin").locator("code")).to_have_text(sha256(slow))
    values = await samples(page)
    assert at_restart < 60, "the job should still have been running when the web process stopped"
    assert non_decreasing(values), values
    assert values[-1] == 100


async def test_a_reload_picks_up_where_the_bar_was(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch(upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    slow = random_file(tmp_path / "slow.bin", 8 * SLOW_BYTES_PER_S)
    await sample_bar(page, "Processing of slow.bin")
    await open_page(page, stack)
    await upload(page, slow)
    await wait_for_bar(processing_bar(page, "slow.bin"), 15)
    before = await samples(page)
    await page.reload()
    await expect(processing_bar(page, "slow.bin")).to_have_js_property("value", 100, timeout=30_000)
    after = await samples(page)
    assert non_decreasing(before) and non_decreasing(after), (before, after)
    assert after[0] >= before[-1] > 0, "the bar started again below where it was"
    assert after[-1] == 100

    # A finished job's card comes back with its result.
    await page.reload()
    finished = card(page, "slow.bin")
    await expect(finished.locator(".badge")).to_have_text("Done")
    await expect(finished.locator("code")).to_have_text(sha256(slow))
    await expect(processing_bar(page, "slow.bin")).to_have_js_property("value", 100)


def write_sample_files(directory: Path) -> list[Path]:
    photo = directory / "harbour.png"
    image = Image.new("RGB", (1200, 800))
    draw = ImageDraw.Draw(image)
    for y in range(800):
        draw.line([(0, y), (1200, y)], fill=(40 + y // 8, 90 + y // 10, 150 - y // 12))
    image.save(photo)
    table = directory / "stations.csv"
    rows = [f"{i},Station {i},{50 + i / 1000:.3f},{4 + i / 2000:.3f}" for i in range(1, 4001)]
    table.write_text("id,name,latitude,longitude\n" + "\n".join(rows) + "\n")
    notes = directory / "release-notes.txt"
    notes.write_text("".join(f"{i}. Fixed one thing, and made another faster.\n" for i in range(1, 901)))
    return [photo, table, notes]


async def test_several_uploads_at_once_each_get_a_card(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    """Also the README's screenshot: `JOBPULSE_SCREENSHOT=docs/upload-page.png` writes it there too."""
    stack = await launch()
    files = write_sample_files(tmp_path)
    await open_page(page, stack)
    jobs = await upload(page, *files)
    assert len({job["id"] for job in jobs}) == 3
    for path in files:
        finished = card(page, path.name)
        await expect(finished.locator(".badge")).to_have_text("Done", timeout=30_000)
        await expect(finished.locator("code")).to_have_text(sha256(path))
        await expect(upload_bar(page, path.name)).to_have_js_property("value", 100)
        await expect(processing_bar(page, path.name)).to_have_js_property("value", 100)
    await expect(card(page, "harbour.png")).to_contain_text(
        "PNG, 1,200 \N{MULTIPLICATION SIGN} 800 pixels, RGB"
    )
    await expect(card(page, "stations.csv")).to_contain_text("4,000 below the header")
    await expect(card(page, "stations.csv")).to_contain_text("id, name, latitude, longitude")
    await expect(card(page, "release-notes.txt")).to_contain_text("900")
    order = await page.locator("#cards h3").all_inner_texts()
    assert order == [path.name for path in files]

    await page.evaluate("document.activeElement?.blur()")
    for target in [tmp_path / "upload-page.png", os.environ.get("JOBPULSE_SCREENSHOT")]:
        if target:
            await page.screenshot(path=str(target), full_page=True)


async def test_more_jobs_than_connections_still_leave_room_to_cancel(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    """Browsers open six connections per origin over HTTP/1.1 and each live event stream holds one: the
    page streams only some jobs and polls the rest, so a Cancel (a DELETE) never waits for a free one."""
    stack = await launch(upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    # Six: one more than the page streams at once, and no more than a small worker processes at once.
    paths = [random_file(tmp_path / f"part{i}.bin", 10 * SLOW_BYTES_PER_S) for i in range(1, 7)]
    await open_page(page, stack)
    jobs = await upload(page, *paths)
    for path in paths:
        await wait_for_bar(processing_bar(page, path.name), 1)
    await page.get_by_role("button", name="Cancel part6.bin").click()
    await expect(card(page, "part6.bin").locator(".badge")).to_have_text("Cancelled", timeout=5_000)
    states = [(await job_state(stack, job["id"]))["status"] for job in jobs]
    assert sorted(states) == ["cancelled"] + ["running"] * 5


async def test_a_file_over_the_limit_is_refused_before_sending(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    stack = await launch(max_upload_bytes=100_000)
    small = random_file(tmp_path / "small.bin", 50_000)
    large = random_file(tmp_path / "large.bin", 250_000)
    posted: list[str] = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    await open_page(page, stack)
    await expect(page.locator("#limit")).to_contain_text("up to 100 kB")
    await page.locator("#file-input").set_input_files([str(small), str(large)])
    refused = card(page, "large.bin")
    await expect(refused.locator(".badge")).to_have_text("Not uploaded")
    await expect(refused.locator(".problem")).to_have_text(
        "It is 250 kB, more than the 100 kB limit for one file, so it was not sent."
    )
    await expect(card(page, "small.bin").locator(".badge")).to_have_text("Done", timeout=30_000)
    assert posted == [f"{stack.url}/uploads"], "only the small file was sent"


async def test_a_413_from_the_server_is_shown_in_words(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    """The page's limit is a courtesy; the server's is the one that counts.

    The page was loaded from a web process with a higher limit than its successor's, as after a
    redeploy that lowered it.
    """
    stack = await launch(max_upload_bytes=1_000_000)
    large = random_file(tmp_path / "large.bin", 250_000)
    await open_page(page, stack)
    stack.stop_web()
    stack.env["JOBPULSE_MAX_UPLOAD_BYTES"] = "100000"
    await anyio.to_thread.run_sync(stack.start_web)
    await page.locator("#file-input").set_input_files(str(large))
    refused = card(page, "large.bin")
    await expect(refused.locator(".badge")).to_have_text("Upload failed")
    await expect(refused.locator(".problem")).to_contain_text("larger than the server's upload limit")
    assert os.listdir(tmp_path / "uploads") == []


async def test_a_busy_server_is_said_in_words_and_the_upload_can_be_retried(
    page: Page, tmp_path: Path
) -> None:
    """While Redis refuses writes (out of memory here, on a Redis of this test's own) the web answers 503."""
    notes = random_file(tmp_path / "notes.bin", 10_000)
    with RedisServer() as server:
        launch = StackFactory(server.url, tmp_path)
        redis = Redis.from_url(server.url)
        try:
            stack = await launch()
            await open_page(page, stack)
            await redis.config_set("maxmemory", "1")  # with noeviction: every write is refused
            await page.locator("#file-input").set_input_files(str(notes))
            refused = card(page, "notes.bin")
            await expect(refused.locator(".badge")).to_have_text("Upload failed")
            await expect(refused.locator(".problem")).to_contain_text("The server is busy right now")
            await redis.config_set("maxmemory", "0")
            # arq's worker exits on a refused write of its own (a supervisor restarts it): start another.
            stack.start_worker()
            await page.get_by_role("button", name="Retry notes.bin").click()
            await expect(refused.locator(".badge")).to_have_text("Done", timeout=30_000)
            await expect(refused.locator("code")).to_have_text(sha256(notes))
        finally:
            launch.stop()
            await redis.aclose()


async def test_a_job_the_server_no_longer_has_says_so_and_can_be_dismissed(
    page: Page, launch: StackFactory
) -> None:
    stack = await launch()
    saved = [{"jobId": "AAAAAAAAAAAAAAAAAAAAAA", "name": "old.txt", "size": 1200, "batch": 1, "index": 0}]
    await page.goto(f"{stack.url}/static/favicon.svg")  # any page of the origin, for its localStorage
    await page.evaluate("(saved) => localStorage.setItem('jobpulse.uploads', JSON.stringify(saved))", saved)
    await open_page(page, stack)
    gone = card(page, "old.txt")
    await expect(gone.locator(".badge")).to_have_text("Not found")
    await expect(gone).to_contain_text("The server no longer has this job.")
    await page.get_by_role("button", name="Dismiss old.txt").click()
    await expect(gone).to_have_count(0)
    assert await page.evaluate("localStorage.getItem('jobpulse.uploads')") == "[]"
    await page.reload()
    await expect(page.get_by_text("Nothing uploaded yet.")).to_be_visible()


async def test_the_page_works_from_the_keyboard(page: Page, launch: StackFactory, tmp_path: Path) -> None:
    stack = await launch(upload_throttle_bytes_per_s=SLOW_BYTES_PER_S)
    slow = random_file(tmp_path / "slow.bin", 20 * SLOW_BYTES_PER_S)
    choosers: list[FileChooser] = []
    # Listening before any key press turns Playwright's file-chooser interception on in time; with
    # `expect_file_chooser()` around the key press, the first chooser can open before it is.
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    await open_page(page, stack)
    await tab_to(page, "document.activeElement.type === 'file'", "the file picker")
    for key, files in [(" ", []), ("Enter", [str(slow)])]:
        choosers.clear()
        await page.keyboard.press(key)
        with anyio.fail_after(10):
            while not choosers:
                await anyio.sleep(0.02)
        await choosers[0].set_files(files)

    cancel = page.get_by_role("button", name="Cancel slow.bin")
    await expect(cancel).to_be_visible()
    assert await cancel.evaluate("(element) => element.tagName") == "BUTTON"
    await wait_for_bar(processing_bar(page, "slow.bin"), 1)
    # From the file picker, Tab skips "Clear finished" (disabled: nothing has finished) to the card's Cancel.
    await page.keyboard.press("Tab")
    await expect(cancel).to_be_focused()
    await page.keyboard.press("Enter")
    dismiss = page.get_by_role("button", name="Dismiss slow.bin")
    await expect(dismiss).to_be_focused()  # focus moved from the Cancel button that went away
    await page.keyboard.press(" ")
    await expect(card(page, "slow.bin")).to_have_count(0)
    await expect(page.locator("#file-input")).to_be_focused()


async def test_a_hostile_filename_is_shown_as_text_and_runs_nothing(
    page: Page, launch: StackFactory, tmp_path: Path
) -> None:
    """The name is the client's, shown back by the page: it must never become markup or script."""
    stack = await launch()
    name = "<img src=x onerror=\"document.title='pwned'\">.txt"
    hostile = tmp_path / name
    hostile.write_bytes(b"harmless\n")
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    await open_page(page, stack)
    await upload(page, hostile)
    shown = card(page, name)
    await expect(shown.locator(".badge")).to_have_text("Done")
    await expect(shown).to_contain_text(name)
    assert await page.locator("article img").count() == 0
    assert await page.title() != "pwned"
    assert problems == []  # no script errors and no Content-Security-Policy violations either


async def test_the_page_is_served_with_a_content_security_policy(page: Page, launch: StackFactory) -> None:
    stack = await launch()
    response = await page.goto(stack.url)
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "object-src 'none'" in policy
    inline_ran = await page.evaluate(
        """() => new Promise((resolve) => {
            const script = document.createElement("script");
            script.textContent = "window.__inlineRan = true";
            document.body.append(script);
            setTimeout(() => resolve(window.__inlineRan === true), 100);
        })"""
    )
    assert inline_ran is False
