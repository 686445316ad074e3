"""DetachedStream as pure logic: what it writes to a transport, and when, for live events, a full
socket, a quiet stream and the end. A recording transport stands in for the socket; the end-to-end
behaviour on real uvicorn is in tests/integration/test_handoff.py and tests/integration/test_events.py.
"""

import asyncio

import pytest
from redis.asyncio import Redis

from jobpulse import keys
from jobpulse.events import StoredEvent, from_live_message
from jobpulse.sse import LAST_CHUNK, encode_chunk, encode_comment
from jobpulse.web.streaming.detached_stream import DetachedStream
from jobpulse.web.streaming.hub import Hub, _Channel
from jobpulse.web.streaming.stream_clock import StreamClock
from jobpulse.web.streaming.subscription import Subscription
from tests.support.history import History, event
from tests.support.transport import RecordingTransport

pytestmark = pytest.mark.anyio


class Setup:
    def __init__(self, history_size: int = 0) -> None:
        self.history = History(history_size)
        # The hub is never started: no Redis connection is made. It only hands out the pending writes
        # and takes the subscription back.
        self.hub = Hub(Redis(), self.history, max_buffered=4)
        self.subscription = Subscription("job", 0, self.history, max_buffered=4)
        self.closed = 0
        self.stream = DetachedStream(
            self.subscription,
            StreamClock(1.0),
            pending=self.hub.pending_writes,
            counters=self.hub.counters,
            leave=self.hub.release,
            on_close=self._on_close,
            keepalive_s=10,
            send_timeout_s=5,
            reconnect_ms=250,
        )
        self.transport = RecordingTransport()

    def _on_close(self) -> None:
        self.closed += 1

    async def start(self) -> None:
        """Start, then let the replay of the (empty or given) history finish."""
        self.stream.start(self.transport)
        for _ in range(5):
            await asyncio.sleep(0)


async def _next_loop_turns() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_events_read_together_go_out_in_one_write_in_order() -> None:
    setup = Setup()
    await setup.start()
    for _ in range(3):
        setup.history.publish(setup.subscription)
    assert setup.transport.writes == []  # not yet: after the hub's read
    await _next_loop_turns()
    assert setup.transport.writes == [b"".join(event.chunk for event in setup.history.events)]


async def test_a_replayed_history_then_live_events() -> None:
    setup = Setup(history_size=3)
    await setup.start()
    setup.history.publish(setup.subscription)
    await _next_loop_turns()
    assert b"".join(setup.transport.writes) == b"".join(event.chunk for event in setup.history.events)


async def test_nothing_is_written_while_the_socket_is_full_and_nothing_is_lost() -> None:
    setup = Setup()
    await setup.start()
    setup.stream.pause_writing()
    for _ in range(7):  # more than the subscription buffers: it falls behind and re-reads later
        setup.history.publish(setup.subscription)
    await _next_loop_turns()
    assert setup.transport.writes == []
    setup.stream.resume_writing()
    for _ in range(10):
        await asyncio.sleep(0)
    assert b"".join(setup.transport.writes) == b"".join(event.chunk for event in setup.history.events)


async def test_a_socket_full_for_longer_than_the_send_timeout_is_dropped() -> None:
    setup = Setup()
    await setup.start()
    loop = asyncio.get_running_loop()
    setup.stream.pause_writing()
    setup.stream.tick(loop.time() + 4)
    assert not setup.transport.aborted
    setup.stream.tick(loop.time() + 6)
    assert setup.transport.aborted
    setup.history.publish(setup.subscription)
    setup.stream.resume_writing()  # a late drain of what was buffered must not write to it again
    await _next_loop_turns()
    assert setup.transport.writes == []
    setup.stream.connection_lost(None)
    assert setup.closed == 1 and setup.hub.subscription_count == 0


async def test_a_quiet_stream_gets_a_keepalive_and_a_busy_one_does_not() -> None:
    setup = Setup()
    await setup.start()
    now = asyncio.get_running_loop().time()
    setup.stream.tick(now + 5)
    assert setup.transport.writes == []
    setup.stream.tick(now + 11)
    assert setup.transport.writes == [encode_chunk(encode_comment("keep-alive"))]
    setup.history.publish(setup.subscription)
    await _next_loop_turns()
    setup.stream.tick(now + 22)  # wrote since the last tick: that counts as activity
    setup.stream.tick(now + 30)
    assert len(setup.transport.writes) == 2


async def test_the_terminal_event_ends_the_body_and_closes() -> None:
    setup = Setup()
    await setup.start()
    setup.history.publish(setup.subscription)
    setup.history.publish(setup.subscription, final=True)
    await _next_loop_turns()
    first, final = setup.history.events
    assert setup.transport.writes == [first.chunk + final.chunk, LAST_CHUNK]
    assert setup.transport.closed
    setup.stream.connection_lost(None)
    setup.stream.connection_lost(None)
    assert setup.closed == 1


async def test_a_closed_subscription_ends_with_a_short_retry() -> None:
    setup = Setup()
    await setup.start()
    setup.subscription.close()  # what the hub does when the process stops
    await _next_loop_turns()
    assert setup.transport.writes == [encode_chunk(b"retry: 250\n") + LAST_CHUNK]
    assert setup.transport.closed


async def test_the_opening_goes_out_with_the_replay_in_one_write() -> None:
    setup = Setup(history_size=2)
    setup.stream.start(setup.transport, opening=b": connected\n")
    await _next_loop_turns()
    replay = b"".join(event.chunk for event in setup.history.events)
    assert setup.transport.writes == [encode_chunk(b": connected\n") + replay]


async def test_the_opening_goes_out_alone_when_there_is_nothing_to_replay() -> None:
    setup = Setup()
    setup.stream.start(setup.transport, opening=b": connected\n")
    await _next_loop_turns()
    assert setup.transport.writes == [encode_chunk(b": connected\n")]


async def test_a_client_that_keeps_sending_after_its_request_is_cut_off() -> None:
    setup = Setup()
    await setup.start()
    setup.stream.data_received(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")  # a little: ignored
    assert not setup.transport.aborted
    for _ in range(16):
        setup.stream.data_received(b"x" * 4096)
    assert setup.transport.aborted
    setup.history.publish(setup.subscription)
    await _next_loop_turns()
    assert setup.transport.writes == []  # nothing more is written to it


# What the hub does after each read: `Subscription.deliver` with the job's new events of that read.


def _deliver(setup: Setup, count: int = 1, *, final: bool = False) -> list[StoredEvent]:
    """One read of the hub that brought `count` new events of the job (the last one terminal if `final`)."""
    start = len(setup.history.events) + 1
    new = [event(start + i, final and i == count - 1) for i in range(count)]
    setup.history.events.extend(new)
    setup.subscription.deliver(new)
    return new


async def test_a_live_event_that_follows_on_is_written_at_once() -> None:
    setup = Setup()
    await setup.start()
    for _ in range(3):
        (new,) = _deliver(setup)
        assert setup.transport.writes[-1] == new.chunk  # in the same call: no queue, no loop turn
    assert setup.transport.writes == [e.chunk for e in setup.history.events]
    assert setup.hub.counters.delivered == 3 and setup.subscription.handed_out == 3


async def test_events_of_one_read_go_out_in_one_write() -> None:
    setup = Setup()
    await setup.start()
    _deliver(setup, 3)
    assert setup.transport.writes == []  # queued, written on the next turn
    await _next_loop_turns()
    assert setup.transport.writes == [b"".join(e.chunk for e in setup.history.events)]
    (new,) = _deliver(setup)  # caught up again: the next one goes straight out
    assert setup.transport.writes[-1] == new.chunk


async def test_a_live_event_waits_while_the_socket_is_full_and_none_is_lost() -> None:
    setup = Setup()
    await setup.start()
    setup.stream.pause_writing()
    for _ in range(7):  # more than the subscription buffers: it falls behind and re-reads later
        _deliver(setup)
    assert setup.transport.writes == []
    setup.stream.resume_writing()
    for _ in range(10):
        await asyncio.sleep(0)
    (new,) = _deliver(setup)
    assert b"".join(setup.transport.writes) == b"".join(e.chunk for e in setup.history.events)
    assert setup.transport.writes[-1] == new.chunk


async def test_a_gap_is_filled_from_the_stream_before_the_live_event() -> None:
    setup = Setup()
    await setup.start()
    setup.history.events.extend([event(1), event(2)])  # the hub missed these
    _deliver(setup)  # event 3
    assert setup.transport.writes == []
    await _next_loop_turns()
    assert b"".join(setup.transport.writes) == b"".join(e.chunk for e in setup.history.events)


async def test_a_live_event_during_the_replay_waits_for_it() -> None:
    setup = Setup(history_size=2)
    setup.stream.start(setup.transport, opening=b": connected\n")
    _deliver(setup)  # event 3, while events 1 and 2 are being read
    assert setup.transport.writes == []
    await _next_loop_turns()
    replay = b"".join(e.chunk for e in setup.history.events)
    assert b"".join(setup.transport.writes) == encode_chunk(b": connected\n") + replay


async def test_the_terminal_event_delivered_alone_still_ends_the_body() -> None:
    setup = Setup()
    await setup.start()
    (first,) = _deliver(setup)
    (final,) = _deliver(setup, final=True)
    assert setup.transport.writes == [first.chunk]  # the end takes the queue's way
    await _next_loop_turns()
    assert setup.transport.writes == [first.chunk, final.chunk, LAST_CHUNK]
    assert setup.transport.closed


async def test_the_hub_delivers_the_events_of_one_read_together() -> None:
    setup = Setup()
    await setup.start()
    name = keys.live_channel("job").encode()
    channel = _Channel("job", name)
    channel.subscriptions.add(setup.subscription)
    setup.hub._channels[name] = channel
    messages = [b"%d\nprogress\n0\n{}" % event_id for event_id in (1, 2)]
    for message in messages:  # two messages dispatched from one read of the hub's connection
        setup.hub._dispatch([b"message", name, message])
    assert setup.transport.writes == []
    await _next_loop_turns()
    assert setup.transport.writes == [b"".join(from_live_message(m).chunk for m in messages)]


async def test_a_stream_that_fails_a_delivery_costs_the_others_nothing_and_rereads() -> None:
    broken, healthy = Setup(), Setup()
    await broken.start()
    await healthy.start()

    def fail(_event: StoredEvent) -> bool:
        raise RuntimeError("a bug in one stream")

    broken.subscription.attach(lambda: None, fail)
    name = keys.live_channel("job").encode()
    channel = _Channel("job", name)
    channel.subscriptions.update({broken.subscription, healthy.subscription})
    new = event(1)
    channel.news.append(new)
    channel.flush()
    assert healthy.transport.writes == [new.chunk]
    assert broken.subscription.needs_fetch  # it re-reads the stream rather than miss the event
