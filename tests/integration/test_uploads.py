"""`POST /uploads` and the `process_upload` task, through the real stack: uvicorn, arq, Redis, the disk."""

import asyncio
import hashlib
import io
import itertools
import os
import resource
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from jobpulse import keys
from jobpulse.settings import Settings
from tests.conftest import Stack, StackFactory, WebServer
from tests.support.multipart import CONTENT_TYPE, Part, multipart
from tests.support.sse import Event, read_events

pytestmark = pytest.mark.anyio


async def upload(stack: Stack, name: str, data: bytes, content_type: str | None = None) -> dict[str, Any]:
    files = {"file": (name, data, content_type or "application/octet-stream")}
    response = await stack.client.post("/uploads", files=files)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/jobs/{response.json()['id']}"
    body: dict[str, Any] = response.json()
    return body


async def post_raw(stack: Stack, body: bytes, content_type: str = CONTENT_TYPE) -> httpx.Response:
    return await stack.client.post("/uploads", content=body, headers={"content-type": content_type})


async def no_job_recorded(stack: Stack) -> bool:
    """No job's keys, and nothing in the queue's index of unfinished jobs (the workers' own bookkeeping,
    such as the reconciler's lease, is not a job)."""
    job_keys = await stack.redis.keys("jobpulse:{*")
    unfinished: int = await stack.redis.zcard(keys.unfinished_jobs_key(stack.settings.queue_name))
    return job_keys == [] and unfinished == 0


def stored(stack: Stack) -> list[str]:
    """Everything in the upload directory, partial files included."""
    return sorted(os.listdir(stack.settings.upload_dir))


def final_status(events: list[Event]) -> dict[str, Any]:
    assert events[-1].is_terminal, events[-1]
    return events[-1].data


async def test_upload_is_stored_under_the_job_id_and_processed(stack: Stack) -> None:
    data = os.urandom(3 * 1024 * 1024) + b"\nlast line without newline"
    job = await upload(stack, "blob.bin", data)
    assert job["task"] == "process_upload" and job["status"] == "queued"
    events = await read_events(stack.client, job["id"])
    done = final_status(events)
    assert done["status"] == "succeeded", done
    assert done["result"] == {
        "filename": "blob.bin",
        "content_type": "application/octet-stream",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "lines": data.count(b"\n") + 1,
    }
    progress = [e.data for e in events if e.event == "progress"]
    assert progress[-1]["progress"] == 100 and progress[-1]["current"] == progress[-1]["total"] == len(data)
    assert stored(stack) == [job["id"]]
    assert (stack.settings.upload_dir / job["id"]).read_bytes() == data


async def test_csv_upload_reports_columns_and_rows(stack: Stack) -> None:
    data = b'\xef\xbb\xbfname,city,note\nada,london,"two\nlines"\nalan,wilmslow,\n'
    job = await upload(stack, "people.csv", data, "text/csv")
    done = final_status(await read_events(stack.client, job["id"]))
    assert done["status"] == "succeeded", done
    assert done["result"]["csv"] == {"columns": ["name", "city", "note"], "column_count": 3, "rows": 2}
    assert done["result"]["lines"] == 4


async def test_csv_that_is_not_utf8_fails_with_a_reason(stack: Stack) -> None:
    job = await upload(stack, "broken.csv", b"a,b\n\xff\xfe\x00\x81\n", "text/csv")
    done = final_status(await read_events(stack.client, job["id"]))
    assert done["status"] == "failed"
    assert done["error"] == "broken.csv is not UTF-8 text (invalid start byte), so not a CSV file"
    assert done["attempt"] == 1  # a broken file is not retried


async def test_image_upload_reports_format_and_size(stack: Stack) -> None:
    png = io.BytesIO()
    Image.new("RGB", (320, 200), "teal").save(png, "PNG")
    job = await upload(stack, "teal.png", png.getvalue(), "image/png")
    done = final_status(await read_events(stack.client, job["id"]))
    assert done["result"]["image"] == {"format": "PNG", "width": 320, "height": 200, "mode": "RGB"}


async def test_a_file_named_like_an_image_that_is_not_one_is_still_processed(stack: Stack) -> None:
    job = await upload(stack, "fake.jpg", b"not a jpeg", "image/jpeg")
    done = final_status(await read_events(stack.client, job["id"]))
    assert done["status"] == "succeeded" and "image" not in done["result"]


async def test_empty_file(stack: Stack) -> None:
    job = await upload(stack, "empty.txt", b"")
    done = final_status(await read_events(stack.client, job["id"]))
    assert done["result"]["size"] == 0 and done["result"]["lines"] == 0
    assert done["result"]["sha256"] == hashlib.sha256(b"").hexdigest()


async def test_large_file_progress_is_smooth_and_by_bytes(make_stack: StackFactory) -> None:
    size = 48 * 1024 * 1024
    stack = await make_stack(upload_throttle_bytes_per_s=size // 2, progress_interval_ms=100)
    job = await upload(stack, "big.bin", b"\0" * size)
    events = await read_events(stack.client, job["id"])
    assert final_status(events)["status"] == "succeeded"
    progress = [e.data for e in events if e.event == "progress"]
    currents = [p["current"] for p in progress]
    assert currents == sorted(currents) and all(p["total"] == size for p in progress)
    assert len(progress) >= 10, "about 2 s of reading should give ~20 updates, 100 ms apart"
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(progress)]
    assert max(gaps) < 0.5, gaps


async def test_cancel_stops_the_reading(make_stack: StackFactory) -> None:
    stack = await make_stack(upload_throttle_bytes_per_s=1024 * 1024)
    job = await upload(stack, "slow.bin", b"x" * (20 * 1024 * 1024))
    with anyio.fail_after(10):
        while (await stack.job(job["id"]))["progress"] == 0:
            await anyio.sleep(0.05)
    assert _threads_reading_uploads() == 1
    response = await stack.client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200
    events = await read_events(stack.client, job["id"])
    assert final_status(events)["status"] == "cancelled"
    with anyio.fail_after(5):
        while _threads_reading_uploads():
            await anyio.sleep(0.05)


def _threads_reading_uploads() -> int:
    """Threads with `upload_analysis` code anywhere on their stack."""
    count = 0
    for top in sys._current_frames().values():
        frame: FrameType | None = top
        while frame is not None:
            if frame.f_code.co_filename.endswith("upload_analysis.py"):
                count += 1
                break
            frame = frame.f_back
    return count


async def test_every_job_a_worker_may_run_reads_at_once(make_stack: StackFactory) -> None:
    """Regression: on asyncio's default thread pool (CPUs + 4 threads) the 7th upload waited at 0 %."""
    stack = await make_stack(max_jobs=9, upload_throttle_bytes_per_s=200_000)
    jobs = [await upload(stack, f"{n}.bin", b"x" * 2_000_000) for n in range(9)]
    with anyio.fail_after(20):
        while _threads_reading_uploads() < 9:
            await anyio.sleep(0.05)
    for job in jobs:
        assert (await stack.client.delete(f"/jobs/{job['id']}")).status_code == 200


async def test_a_job_whose_file_is_gone_fails_saying_why(stack: Stack) -> None:
    await stack.worker.stop()
    job = await upload(stack, "gone.txt", b"hello\n")
    (stack.settings.upload_dir / job["id"]).unlink()
    await stack.worker.start()
    done = final_status(await read_events(stack.client, job["id"]))
    assert done["status"] == "failed"
    assert "gone.txt is no longer stored" in done["error"] and "JOBPULSE_UPLOAD_DIR" in done["error"]


async def test_over_the_limit_is_413_and_leaves_no_file(make_stack: StackFactory) -> None:
    stack = await make_stack(max_upload_bytes=100_000)
    response = await stack.client.post("/uploads", files={"file": ("big.bin", b"x" * 300_000)})
    assert response.status_code == 413
    assert response.json() == {"detail": "The upload exceeds 100000 bytes (JOBPULSE_MAX_UPLOAD_BYTES)."}
    assert stored(stack) == []
    exactly = await stack.client.post("/uploads", files={"file": ("ok.bin", b"x" * 100_000)})
    assert exactly.status_code == 202


async def test_a_client_still_sending_its_body_reads_the_413_not_a_reset(make_stack: StackFactory) -> None:
    """Regression: the 413 for an upload over the limit came with a connection reset.

    Closing a socket with unread bytes makes the kernel answer with a reset: a client still writing its
    body (curl, httpx and most libraries write all of it before reading) lost the 413. The test above
    passed only because the web app used to yield to the event loop (thread hops) long enough for httpx,
    in the same loop, to finish writing first. A refused body that is small enough is now read and
    dropped before the answer, its length declared or not (chunked).
    """
    stack = await make_stack(max_upload_bytes=100_000)
    body = multipart(Part("file", b"z" * 300_000, filename="big.bin"))
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    for framing, payload in [
        (b"content-length: %d" % len(body), body),
        (b"transfer-encoding: chunked", chunked),
    ]:
        head = b"POST /uploads HTTP/1.1\r\nhost: x\r\ncontent-type: " + CONTENT_TYPE.encode()
        async with await anyio.connect_tcp("127.0.0.1", stack.web.port) as sock:
            await sock.send(head + b"\r\n" + framing + b"\r\n\r\n")
            for start in range(0, len(payload), 50_000):
                await anyio.sleep(0.02)  # the server has answered by now
                await sock.send(payload[start : start + 50_000])
            answer = b""
            with anyio.fail_after(5):
                while b"JOBPULSE_MAX_UPLOAD_BYTES" not in answer:
                    answer += await sock.receive()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert stored(stack) == []


async def test_declared_length_over_the_limit_is_refused_before_reading(make_stack: StackFactory) -> None:
    stack = await make_stack(max_upload_bytes=100_000)
    async with await anyio.connect_tcp("127.0.0.1", stack.web.port) as sock:
        await sock.send(
            b"POST /uploads HTTP/1.1\r\nhost: x\r\ncontent-type: "
            + CONTENT_TYPE.encode()
            + b"\r\ncontent-length: 999999999\r\n\r\n"
        )
        with anyio.fail_after(5):
            answer = await sock.receive()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert stored(stack) == []


async def test_client_gone_mid_upload_leaves_no_file(stack: Stack) -> None:
    body = multipart(Part("file", b"y" * 2_000_000, filename="half.bin"))
    async with await anyio.connect_tcp("127.0.0.1", stack.web.port) as sock:
        await sock.send(
            b"POST /uploads HTTP/1.1\r\nhost: x\r\ncontent-type: "
            + CONTENT_TYPE.encode()
            + f"\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        )
        await sock.send(body[: len(body) // 2])
        with anyio.fail_after(5):
            while not any(name.endswith(".part") for name in stored(stack)):
                await anyio.sleep(0.01)
    with anyio.fail_after(5):
        while stored(stack):
            await anyio.sleep(0.02)
    assert await no_job_recorded(stack)


HOSTILE_NAMES = {
    "../../etc/passwd": "passwd",
    "..\\..\\windows\\win.ini": "win.ini",
    "/absolute/path.txt": "path.txt",
    "..": "upload",
    "a\x00b\x1b[31mred\x7f.txt": "ab[31mred.txt",
    "\u202eevil.exe": "evil.exe",
    "x" * 500 + ".txt": "x" * 250 + "….txt",
    "名前.txt": "名前.txt",
}


@pytest.mark.parametrize(("sent", "shown"), HOSTILE_NAMES.items(), ids=range(len(HOSTILE_NAMES)))
async def test_hostile_filenames_are_shown_cleaned_and_never_used_as_paths(
    stack: Stack, tmp_path: Path, sent: str, shown: str
) -> None:
    disposition = b'form-data; name="file"; filename="' + sent.encode() + b'"'
    response = await post_raw(stack, multipart(Part(None, b"data\n", raw_disposition=disposition)))
    assert response.status_code == 202, response.text
    job = response.json()
    done = final_status(await read_events(stack.client, job["id"]))
    assert done["result"]["filename"] == shown
    assert len(done["result"]["filename"]) <= 255
    assert stored(stack) == [job["id"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uploads"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (
            b'{"file": 1}',
            "application/json",
            415,
            "Content-Type must be multipart/form-data, not 'application/json'.",
        ),
        (b"", "", 415, "Content-Type must be multipart/form-data, not 'missing'."),
        (b"x", "multipart/form-data", 400, "The multipart/form-data Content-Type has no valid boundary."),
        (multipart(), CONTENT_TYPE, 422, "The body has no complete 'file' part."),
        (b"", CONTENT_TYPE, 422, "The body has no complete 'file' part."),
        (multipart(Part("file", b"abc")), CONTENT_TYPE, 422, "'file' must be a file, sent with a filename."),
        (
            multipart(Part("file", b"abc", filename="")),
            CONTENT_TYPE,
            422,
            "'file' must be a file, sent with a filename.",
        ),
        (
            multipart(Part("note", b"hi")),
            CONTENT_TYPE,
            422,
            "Unexpected field 'note'; send only the file, as 'file'.",
        ),
        (
            multipart(Part("file", b"a", filename="a"), Part("file", b"b", filename="b")),
            CONTENT_TYPE,
            422,
            "Send one file per upload; 'file' came twice.",
        ),
        (multipart(Part("file", b"abc", filename="a.txt"), close=False), CONTENT_TYPE, 422, None),
        (b"garbage without any boundary", CONTENT_TYPE, 400, None),
        (
            multipart(Part(None, b"abc", raw_disposition=b"attachment")),
            CONTENT_TYPE,
            400,
            "A multipart part has no Content-Disposition: form-data with a name.",
        ),
    ],
)
async def test_bad_upload_requests_get_a_clear_4xx_and_leave_nothing(
    stack: Stack, body: bytes, content_type: str, status: int, detail: str | None
) -> None:
    response = await post_raw(stack, body, content_type)
    assert response.status_code == status, response.text
    answer = response.json()["detail"]
    if detail is not None:
        assert (answer if isinstance(answer, str) else answer[0]["msg"]) == detail
    assert stored(stack) == []
    assert await no_job_recorded(stack)


async def test_process_upload_cannot_be_submitted_as_a_plain_job(stack: Stack) -> None:
    response = await stack.client.post(
        "/jobs", json={"task": "process_upload", "params": {"filename": "x", "size": 1}}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "task"],
            "msg": "Task 'process_upload' is started by POST /uploads, not here.",
            "type": "not_submittable",
        }
    ]


async def test_upload_with_redis_down_is_503_and_leaves_no_file(settings: Settings) -> None:
    web = WebServer(
        settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0", "redis_timeout_s": 0.5})
    )
    await web.start()
    try:
        async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
            response = await client.post("/uploads", files={"file": ("a.txt", b"hello")})
        assert response.status_code == 503 and response.headers["retry-after"]
        assert "Redis is unavailable" in response.json()["detail"]
        assert os.listdir(settings.upload_dir) == []
    finally:
        await web.stop()


async def test_an_upload_directory_that_refuses_the_file_is_503_not_500(stack: Stack) -> None:
    upload_dir = stack.settings.upload_dir
    upload_dir.rmdir()
    upload_dir.write_bytes(b"")  # a file where the directory should be: every open in it fails
    try:
        response = await stack.client.post("/uploads", files={"file": ("a.txt", b"hello")})
    finally:
        upload_dir.unlink()
        upload_dir.mkdir()
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json() == {"detail": "The upload could not be stored (Not a directory); retry shortly."}
    assert await no_job_recorded(stack)


async def test_uploads_older_than_the_retention_are_swept_by_the_worker(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False, upload_retention_s=3600)
    job = await upload(stack, "old.txt", b"old\n")
    fresh = await upload(stack, "fresh.txt", b"fresh\n")
    old = time.time() - 7200
    os.utime(stack.settings.upload_dir / job["id"], (old, old))
    await stack.worker.start()  # the sweep runs at start-up, then every five minutes
    with anyio.fail_after(10):
        while job["id"] in stored(stack):
            await asyncio.sleep(0.05)
    assert fresh["id"] in stored(stack)


async def test_a_large_upload_is_streamed_to_disk_not_held_in_memory(stack: Stack, tmp_path: Path) -> None:
    size = 160 * 1024 * 1024
    source = tmp_path / "sparse.bin"
    with source.open("wb") as f:
        f.truncate(size)  # a sparse file: nothing of it is in this process's memory either
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with source.open("rb") as f:
        response = await stack.client.post("/uploads", files={"file": ("sparse.bin", f)})
    assert response.status_code == 202, response.text
    done = final_status(await read_events(stack.client, response.json()["id"], deadline_s=60))
    assert done["result"]["size"] == size
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 48, f"peak memory grew by {grown_mib:.0f} MiB for a 160 MiB upload"
