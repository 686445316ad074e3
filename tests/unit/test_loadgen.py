"""The fan-out benchmark's load generator as pure logic: what it counts from the bytes a watcher reads.

Its verdicts (lost, duplicated, out of order, latency per progress event) are the benchmark's
correctness claims, so they must not depend on how the bytes happen to be split into reads: a whole
chunk per read takes a fast path, anything else the general parser, and both must agree.
"""

import asyncio
import json
import random
import time
from collections.abc import Iterator

import pytest

from benchmarks.fanout.loadgen import GenResult, GenSpec, Inbox, Watcher
from benchmarks.fanout.runner import merge
from jobpulse.events import StoredEvent
from jobpulse.sse import LAST_CHUNK, encode_chunk, encode_comment, encode_retry
from tests.support.transport import RecordingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()  # never run: the inbox is drained by hand
    yield loop
    loop.close()


def progress(event_id: int, ts: float) -> bytes:
    data = json.dumps({"job_id": "j", "progress": event_id, "ts": ts}, separators=(",", ":"))
    return StoredEvent(id=event_id, type="progress", data=data, final=False).chunk


def succeeded(event_id: int) -> bytes:
    return StoredEvent(id=event_id, type="status", data='{"status":"succeeded"}', final=True).chunk


def watch(
    loop: asyncio.AbstractEventLoop, reads: list[bytes], arrived_at: float | None = None
) -> tuple[GenResult, Watcher]:
    """One watcher fed `reads` (after the response head), each read drained as the event loop would.

    `arrived_at`: the kernel's receive stamp every read carries, as `stamped_socket` hands it on.
    """
    result = GenResult()
    inbox = Inbox(loop)
    spec = GenSpec("127.0.0.1", 1, ["/e"], "sse", "end")
    watcher = Watcher(spec, "/e", result, loop.create_future(), inbox)
    watcher.connection_made(RecordingTransport())
    watcher.data_received(HEAD)
    for data in reads:
        watcher.data_received(data, arrived_at)
        inbox.drain()
    watcher.finish()
    return result, watcher


def stream(ids: list[int], final: int, ts: float) -> list[bytes]:
    """A jobpulse body: a comment, the progress events `ids`, the terminal event `final`, the end."""
    return [
        encode_chunk(encode_comment("connected")),
        *(progress(i, ts) for i in ids),
        succeeded(final),
        LAST_CHUNK,
    ]


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 9)
        pieces.append(data[pos : pos + step])
        pos += step
    return pieces


def test_a_whole_chunk_per_read_is_counted_once_each_with_a_latency(loop: asyncio.AbstractEventLoop) -> None:
    ts = time.time() - 0.25
    result, watcher = watch(loop, stream([1, 2, 3, 4], final=5, ts=ts))
    assert (result.events, result.expected, result.lost) == (5, 5, 0)
    assert (result.duplicated, result.out_of_order, result.incomplete) == (0, 0, 0)
    assert watcher.final_id == 5
    assert len(result.latencies) == 4  # progress events only
    assert all(0.2 < latency < 60 for latency in result.latencies)


@pytest.mark.parametrize("seed", range(5))
def test_reads_split_anywhere_give_the_same_verdicts(loop: asyncio.AbstractEventLoop, seed: int) -> None:
    body = b"".join(stream([1, 2, 3, 4, 5, 6], final=7, ts=time.time()))
    whole, _ = watch(loop, [body])
    split, watcher = watch(loop, split_randomly(body, seed))
    for result in (whole, split):
        assert (result.events, result.expected, result.lost, result.duplicated) == (7, 7, 0, 0)
        assert len(result.latencies) == 6
    assert watcher.final_id == 7


def test_duplicates_reorders_and_gaps_are_counted(loop: asyncio.AbstractEventLoop) -> None:
    ts = time.time()
    result, _ = watch(loop, stream([1, 2, 2, 4, 3, 6], final=8, ts=ts))
    assert result.duplicated == 1  # the second 2
    assert result.out_of_order == 1  # 3 after 4
    assert result.lost == 2  # 5 and 7 never came
    assert result.expected == 8


def test_a_stream_without_its_terminal_event_is_incomplete(loop: asyncio.AbstractEventLoop) -> None:
    result, watcher = watch(loop, [progress(1, time.time()), progress(2, time.time())])
    assert watcher.final_id is None
    assert (result.incomplete, result.expected) == (1, 0)


def test_comments_retry_lines_and_chunk_extensions_take_the_general_path(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ts = time.time()
    second = progress(2, ts)
    size, _, rest = second.partition(b"\r\n")
    reads = [
        progress(1, ts),
        encode_chunk(encode_comment("keep-alive")),  # no blank line: it joins the next event's block
        size + b";note=1\r\n" + rest,  # a chunk extension
        encode_chunk(encode_retry(250)),
        progress(3, ts) + succeeded(4),  # two chunks in one read
        LAST_CHUNK,
    ]
    result, watcher = watch(loop, reads)
    assert (result.events, result.lost, result.duplicated, result.out_of_order) == (4, 0, 0, 0)
    assert len(result.latencies) == 3
    assert watcher.final_id == 4


def test_a_stamped_read_gives_each_progress_event_its_arrival_latency_beside_the_read_one(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ts = time.time() - 0.5
    arrived_at = ts + 0.125  # the kernel had the bytes long before the generator read them
    split, _ = watch(loop, split_randomly(b"".join(stream([1, 2, 3], final=4, ts=ts)), 0), arrived_at)
    assert list(split.arrival_latencies) == [pytest.approx(0.125)] * 3
    assert all(latency > 0.45 for latency in split.latencies)
    unstamped, _ = watch(loop, stream([1, 2, 3], final=4, ts=ts))
    assert len(unstamped.arrival_latencies) == 0 and len(unstamped.latencies) == 3


def test_an_event_read_with_a_newer_ones_bytes_has_no_stamp_of_its_own(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ts = time.time() - 0.5
    second = progress(2, ts)
    reads = [
        progress(1, ts) + second[:20],  # event 1 whole, then the start of event 2: 1's stamp is 2's
        second[20:] + progress(3, ts),  # the rest of 2, then 3 whole: 2's stamp is 3's
        progress(4, ts),  # alone: its own
        succeeded(5),
        LAST_CHUNK,
    ]
    result, _ = watch(loop, reads, arrived_at=ts + 0.125)
    assert len(result.arrival_latencies) == 4
    assert len(result.exact_arrival_latencies) == 2  # 3 and 4


def test_the_busiest_generator_decides_whether_the_generators_were_saturated() -> None:
    calm, busy = GenResult(delivery_busy=0.3), GenResult(delivery_busy=0.95)
    assert merge([calm, busy]).delivery_busy == 0.95
