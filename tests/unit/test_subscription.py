"""Subscription bookkeeping, as pure logic: live events racing a history read, gaps, slow readers."""

import pytest

from jobpulse.web.streaming.subscription import Subscription
from tests.support.history import History, event

pytestmark = pytest.mark.anyio


async def drain(subscription: Subscription) -> list[int]:
    received: list[int] = []
    while (chunk := await subscription.next_chunk(0.01)) is not None:
        if not chunk:
            break
        received += [int(line[4:]) for line in chunk.split(b"\n") if line.startswith(b"id: ")]
    return received


async def test_event_published_during_the_history_read_is_delivered_once() -> None:
    history = History(5)
    subscription = Subscription("job", 0, history, max_buffered=10)

    # Event 6 is appended after the read's snapshot but announced before the read returns,
    # and event 5 (in the snapshot) is announced late as well.
    def race() -> None:
        history.publish(subscription)
        subscription.offer(history.events[4])

    history.during_read = race
    assert await drain(subscription) == [1, 2, 3, 4, 5, 6]
    history.publish(subscription)
    assert await drain(subscription) == [7]


async def test_a_gap_in_live_events_is_filled_from_the_stream() -> None:
    history = History(3)
    subscription = Subscription("job", 0, history, max_buffered=10)
    assert await drain(subscription) == [1, 2, 3]
    history.events.append(event(4))  # the hub missed this one
    history.publish(subscription)  # 5 arrives: a gap
    assert await drain(subscription) == [4, 5]


async def test_slow_reader_keeps_a_bounded_queue_and_loses_nothing() -> None:
    history = History(0)
    subscription = Subscription("job", 0, history, max_buffered=8)
    assert await drain(subscription) == []
    for _ in range(1000):
        history.publish(subscription)
        assert len(subscription._queue) <= 8 and len(subscription._early) <= 8
    history.publish(subscription, final=True)
    assert await drain(subscription) == list(range(1, 1002))
    assert subscription.finished


async def test_duplicates_are_dropped_and_the_stream_ends_at_the_terminal_event() -> None:
    history = History(2)
    subscription = Subscription("job", 0, history, max_buffered=10)
    assert await drain(subscription) == [1, 2]
    subscription.offer(history.events[0])
    subscription.offer(history.events[1])
    history.publish(subscription, final=True)
    assert await drain(subscription) == [3]
    assert await subscription.next_chunk(0.01) is None


async def test_resuming_subscription_starts_after_its_id() -> None:
    history = History(10)
    subscription = Subscription("job", 7, history, max_buffered=10)
    assert await drain(subscription) == [8, 9, 10]


async def test_history_longer_than_one_read_is_read_in_batches() -> None:
    history = History(1234)
    subscription = Subscription("job", 0, history, max_buffered=10)
    assert await drain(subscription) == list(range(1, 1235))
    assert history.reads >= 3
