"""The load generator's stamped reads: the time the client's kernel received bytes, not the time it read them.

Real loopback sockets; the sending side is a plain blocking socket, the reading side the generator's
`StampedConnection` on an asyncio loop.
"""

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from benchmarks.fanout.stamped_socket import (
    SO_TIMESTAMPNS,
    StampedConnection,
    kernel_receive_time,
    open_stamped,
)

pytestmark = pytest.mark.anyio


class Reads(asyncio.Protocol):
    def __init__(self) -> None:
        self.reads: list[tuple[bytes, float | None, float]] = []  # data, kernel's stamp, read time
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()
        self.transport: StampedConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, StampedConnection)
        self.transport = transport

    def data_received(self, data: bytes, arrived_at: float | None = None) -> None:
        self.reads.append((data, arrived_at, time.time()))
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


async def connect(listener: socket.socket) -> tuple[Reads, socket.socket]:
    protocol = Reads()
    host, port = listener.getsockname()
    await open_stamped(asyncio.get_running_loop(), host, port, protocol)
    server_side, _ = await asyncio.get_running_loop().run_in_executor(None, listener.accept)
    return protocol, server_side


async def test_the_stamp_is_when_the_bytes_arrived_not_when_they_were_read(listener: socket.socket) -> None:
    protocol, server_side = await connect(listener)
    with server_side:
        # Block the loop after sending, so the read comes 0.2 s after the bytes arrived.
        sent_at = time.time()
        server_side.sendall(b"event one\n\n")
        time.sleep(0.2)
        await asyncio.wait_for(protocol.arrived.wait(), 5)
        ((data, arrived_at, read_at),) = protocol.reads
        assert data == b"event one\n\n"
        assert arrived_at is not None
        assert sent_at - 0.001 <= arrived_at < sent_at + 0.05
        assert read_at - arrived_at >= 0.19


async def test_several_segments_in_one_read_carry_the_newest_stamp(listener: socket.socket) -> None:
    protocol, server_side = await connect(listener)
    with server_side:
        server_side.sendall(b"older\n\n")
        time.sleep(0.1)
        newer_sent_at = time.time()
        server_side.sendall(b"newer\n\n")
        time.sleep(0.05)
        await asyncio.wait_for(protocol.arrived.wait(), 5)
        ((data, arrived_at, _read_at),) = protocol.reads
        assert data == b"older\n\nnewer\n\n"
        assert arrived_at is not None and arrived_at >= newer_sent_at - 0.001  # the older bytes' is later


async def test_the_request_goes_out_and_a_close_by_the_server_ends_the_connection(
    listener: socket.socket,
) -> None:
    protocol, server_side = await connect(listener)
    with server_side:
        assert protocol.transport is not None
        protocol.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        assert server_side.recv(100) == b"GET / HTTP/1.1\r\n\r\n"
    assert await asyncio.wait_for(protocol.lost, 5) is None
    assert protocol.transport.is_closing()


async def test_closing_it_ourselves_tells_the_protocol_once(listener: socket.socket) -> None:
    protocol, server_side = await connect(listener)
    with server_side:
        assert protocol.transport is not None
        protocol.transport.close()
        protocol.transport.close()
        assert await asyncio.wait_for(protocol.lost, 5) is None
        assert server_side.recv(100) == b""  # the server sees the close


async def test_a_paused_connection_reads_nothing_until_resumed(listener: socket.socket) -> None:
    protocol, server_side = await connect(listener)
    with server_side:
        transport = protocol.transport
        assert transport is not None
        transport.pause_reading()
        server_side.sendall(b"held\n\n")
        await asyncio.sleep(0.1)
        assert protocol.reads == []
        transport.resume_reading()
        await asyncio.wait_for(protocol.arrived.wait(), 5)
        assert protocol.reads[0][0] == b"held\n\n"


def test_a_read_without_a_stamp_has_none() -> None:
    assert kernel_receive_time([]) is None
    other = (socket.SOL_SOCKET, SO_TIMESTAMPNS + 1, struct.pack("@qq", 1, 0))
    assert kernel_receive_time([other]) is None


def test_the_stamp_is_seconds_and_nanoseconds() -> None:
    stamp = (socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("@qq", 1_700_000_000, 250_000_000))
    assert kernel_receive_time([stamp]) == pytest.approx(1_700_000_000.25)
