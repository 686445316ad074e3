"""What the kernel alone charges a server to send one event to each of N loopback clients.

    .venv/bin/python -m benchmarks.write_floor                       # 1000 sockets, 10 rounds/s
    .venv/bin/python -m benchmarks.write_floor --interval-ms 10 --pin

A hot job's update to N watchers is N writes, one per socket, whatever the server: each watcher's
socket is a separate connection and there is no system call that writes to many. This measures those
writes and nothing else: no HTTP, no event loop on the sending side, a plain loop of `socket.send`
of one pre-framed progress event (an HTTP chunk, as jobpulse sends it) to each socket per round,
rounds `--interval-ms` apart. The clients are one uvloop process reading every socket, as the fan-out
benchmark's load generator does. It prints the sender's CPU per send (user and system, from
`os.times()`) and each round's wall time: the least a 1000-watcher update costs on this machine, to
read `benchmarks.fanout`'s hot scenario against.
"""

import argparse
import asyncio
import os
import socket
import sys
import time
from multiprocessing import get_context
from multiprocessing.connection import Connection

from benchmarks.fanout.procs import raise_nofile, split_cpus
from benchmarks.fanout.report import percentile
from jobpulse.sse import encode_chunk

# A jobpulse progress event as a watcher gets it (`jobpulse.sse`), framed as one HTTP/1.1 chunk.
EVENT = encode_chunk(
    b'id: 123\nevent: progress\ndata: {"job_id":"4f0c2a8e9b1d4c7fa3e25b6d8c9a1e07","seq":123,'
    b'"progress":41.0,"message":"step 123 of 300","current":123,"total":300,"ts":1763950000.123456}\n\n'
)


class _Reader(asyncio.Protocol):
    def __init__(self, received: list[int], done: asyncio.Future[None], expected: int) -> None:
        self._received = received
        self._done = done
        self._expected = expected

    def data_received(self, data: bytes) -> None:
        self._received[0] += len(data)
        if self._received[0] >= self._expected and not self._done.done():
            self._done.set_result(None)


async def _receive(conn: Connection, expected_bytes: int) -> None:
    loop = asyncio.get_running_loop()
    received = [0]
    done: asyncio.Future[None] = loop.create_future()
    server = await loop.create_server(lambda: _Reader(received, done, expected_bytes), "127.0.0.1", 0)
    conn.send(server.sockets[0].getsockname()[1])
    await done
    server.close()
    conn.send(received[0])


def receiver_main(conn: Connection, expected_bytes: int, cpus: set[int] | None) -> None:
    """The clients: one process reading every socket until all the bytes sent have arrived."""
    raise_nofile()
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    import uvloop

    uvloop.run(_receive(conn, expected_bytes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.write_floor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument(
        "--pin", action="store_true", help="the sender alone on one CPU, the clients on the rest"
    )
    args = parser.parse_args(argv)
    raise_nofile()
    split = split_cpus() if args.pin else None
    client_cpus = None
    pinned = "no"
    if split is not None:
        sender_cpus, client_cpus = split
        os.sched_setaffinity(0, sender_cpus)
        pinned = f"sender on CPU {sorted(sender_cpus)}, clients on {sorted(client_cpus)}"

    parent, child = get_context("spawn").Pipe()
    expected = args.sockets * args.rounds * len(EVENT)
    receiver = get_context("spawn").Process(
        target=receiver_main, args=(child, expected, client_cpus), daemon=True
    )
    receiver.start()
    port = parent.recv()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.sockets)]
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvloop sets it on every TCP socket
        sock.setblocking(False)
    time.sleep(0.5)  # every connection accepted and idle

    sends = [sock.send for sock in socks]
    rounds_ms: list[float] = []
    short_sends = 0
    started = time.monotonic()
    before = os.times()
    for index in range(args.rounds):
        delay = started + index * args.interval_ms / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        for send in sends:
            try:
                if send(EVENT) != len(EVENT):
                    short_sends += 1
            except BlockingIOError:  # the socket's buffer is full: the clients fell behind
                short_sends += 1
        rounds_ms.append((time.perf_counter() - t0) * 1000)
    after = os.times()
    if not parent.poll(60):
        print("the clients did not receive every byte within 60 s", file=sys.stderr)  # noqa: T201
        return 1
    received = parent.recv()
    receiver.join(5)
    for sock in socks:
        sock.close()

    count = args.sockets * args.rounds
    ordered = sorted(rounds_ms)
    user_us = (after.user - before.user) / count * 1e6
    system_us = (after.system - before.system) / count * 1e6
    print(  # noqa: T201
        f"{args.sockets} sockets x {args.rounds} rounds, {args.interval_ms} ms apart, "
        f"{len(EVENT)}-byte event; pinned: {pinned}\n"
        f"sender CPU per send: {user_us + system_us:.1f} µs (user {user_us:.1f}, system {system_us:.1f})"
        f" -> {(user_us + system_us) * args.sockets / 1000:.2f} ms per round of {args.sockets}\n"
        f"round wall ms: p50 {percentile(ordered, 50):.2f}, p99 {percentile(ordered, 99):.2f}, "
        f"max {max(rounds_ms):.2f}\n"
        f"bytes received/sent: {received:,}/{expected:,}; short sends: {short_sends}"
    )
    return 0 if received == expected and not short_sends else 1


if __name__ == "__main__":
    sys.exit(main())
