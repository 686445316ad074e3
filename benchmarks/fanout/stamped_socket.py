"""A watcher's connection read with `recvmsg`, so each read carries the time its bytes reached the client.

With `SO_TIMESTAMPNS` set, Linux stamps each arriving segment as it enters the receiving socket and hands
the stamp of the newest segment in a read back with that read. On loopback that is the moment the
server's `write` delivered the bytes, before the load generator gets round to reading them: a latency
taken from it is the server's and the network's, not the generator's queue. The generator shares the
server's two cores and, at 100 updates to 1000 watchers a second, needs most of one to read and parse
100,000 events a second; events then wait for it, and the latency taken at its read includes that wait.
A browser or API client on its own machine reads its one stream at once.

The stamp belongs to the newest segment of the read (TCP also merges segments queued unread, keeping
the newest's stamp). When one read returns several events, the older ones get the newest's time: exact
if the server wrote them together, as jobpulse does for a stream that fell behind; overstated if they
arrived apart and the generator read them late. Never understated. The report counts such events and
gives the percentiles of the others, the events that ended their read, beside the whole.

Only the part of a transport the watcher uses is here: write the request, pause (a stalled watcher),
close. Reads come from an `add_reader` callback into one buffer shared by every connection of the
process, copied out per read.
"""

import asyncio
import socket
import struct

# The socket option and the control message it brings share a number: 35 on Linux (asm-generic), which
# Python names only from 3.14 on.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux: seconds, nanoseconds
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
_READ_SIZE = 65536

_view = memoryview(bytearray(_READ_SIZE))


def kernel_receive_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The `SCM_TIMESTAMPNS` stamp of a `recvmsg` as `time.time()` would give it, if there is one."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds * 1e-9)
    return None


class StampedConnection:
    """The transport side of one watcher's connection; the watcher is its protocol."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._closing = False
        self._reading = False

    def start(self) -> None:
        self._protocol.connection_made(self)  # type: ignore[arg-type]
        self.resume_reading()

    def write(self, data: bytes) -> None:
        # Only the request goes this way: a few hundred bytes into an empty, fresh socket buffer.
        sent = self._sock.send(data)
        if sent != len(data):
            raise OSError(f"request cut short: {sent} of {len(data)} bytes sent")

    def pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._lose(None)

    abort = close

    def _on_readable(self) -> None:
        try:
            size, ancillary, _flags, _address = self._sock.recvmsg_into([_view], _ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if not size:
            self._lose(None)
            return
        self._protocol.data_received(bytes(_view[:size]), kernel_receive_time(ancillary))  # type: ignore[call-arg]

    def _lose(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self.pause_reading()
        self._closing = True
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)  # as asyncio's transports do


async def open_stamped(
    loop: asyncio.AbstractEventLoop, host: str, port: int, protocol: asyncio.Protocol
) -> StampedConnection:
    """Connect, ask the kernel for receive stamps, and start reading into `protocol`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    connection = StampedConnection(loop, sock, protocol)
    connection.start()
    return connection
