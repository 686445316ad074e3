"""The load generator: thousands of SSE watchers on raw connections, in one process (or a few).

Each watcher is an `asyncio.Protocol` on a plain TCP connection: it writes one `GET` and parses the
HTTP/1.1 response itself (status line, chunked framing, SSE blocks split on blank lines), which costs far
less than an HTTP client library per event, so one process can hold thousands of streams.

Two modes:

- `sse`: every event is parsed. Per watcher the ids must be 1, 2, 3 … up to the terminal status event,
  each once and in order (lost, duplicated and out-of-order events are counted), and each `progress`
  event's latency is taken three ways, each minus the `ts` in its data (publisher's `time.time()`, same
  host): when the client's kernel received it (`arrival_latencies`: the connection is read with
  `recvmsg` and the kernel's receive stamp, `stamped_socket`), when the generator read it
  (`latencies`), and when the generator had parsed it (`parsed_latencies`).
- `count`: events are only counted (blank lines in the body), for the ceiling endpoints that stream
  pre-encoded events as fast as the client reads, on uvloop's own transports.

A generator that reads slower than the server writes times its own backlog, not the server: one
process reads for a thousand clients that would each have their own CPU. The kernel's stamp is free of
that backlog. The other two are not, so they are kept as small as they can be: body bytes are parsed
after the event loop's current batch of reads (`Inbox`), not inline, where watcher k's read time would
include the parsing of the k-1 read before it; the usual read, one whole chunk holding one whole event,
skips the general parser; and each generator reports its CPU share from its first event to the end
(`delivery_busy`), so the report can flag a saturated one.

`generator_main` runs in a child process and talks to the parent over a `multiprocessing` pipe: it
connects every watcher, reports `ready`, then either waits for every stream to end (`until="end"`) or for
the parent to say `close` (`until="close"`, the idle scenario), and sends back its `GenResult`.
"""

import asyncio
import contextlib
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Literal, cast

from benchmarks.fanout.stamped_socket import open_stamped

# Compact JSON (jobpulse) and json.dumps' default separators (the naive app).
_TERMINAL = tuple(
    f'"status":{sep}"{status}"'.encode()
    for status in ("succeeded", "failed", "cancelled")
    for sep in ("", " ")
)
_MAX_ERRORS_KEPT = 10


@dataclass
class GenSpec:
    host: str
    port: int
    paths: list[str]  # one watcher per path
    mode: Literal["sse", "count"]
    until: Literal["end", "close"]
    connect_concurrency: int = 200
    timeout_s: float = 300.0
    stalled_paths: list[str] = field(default_factory=list)  # watchers that stop reading after the head


@dataclass
class GenResult:
    watchers: int = 0
    connected: int = 0  # got a 200 and its headers
    stalled: int = 0  # of those, watchers that then stopped reading (not counted in the event figures)
    events: int = 0  # events with an id (sse) or blank-line-terminated blocks (count)
    expected: int = 0  # sum over watchers of the terminal event's id
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    incomplete: int = 0  # streams that ended (or timed out) without a terminal event
    dropped: int = 0  # connections closed by the server before the parent said `close`
    errors: int = 0  # connect failures, non-200 answers
    error_samples: list[str] = field(default_factory=list)
    # From the event's ts to the client's kernel receiving it (sse mode, where the kernel stamps reads).
    arrival_latencies: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    # Of those, the events whose bytes ended their read: the stamp is surely theirs. A read holding
    # several events (the server wrote them at once, or the generator fell behind) stamps them all with
    # the newest's.
    exact_arrival_latencies: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    latencies: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    parsed_latencies: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    first_event_at: float = float("inf")  # wall clock; sse mode: progress events only
    last_event_at: float = 0.0
    min_ts: float = float("inf")  # earliest publisher ts seen
    connect_started_at: float = 0.0
    connected_at: float = 0.0  # the last watcher's headers arrived
    cpu_s: float = 0.0  # this process, user + system
    wall_s: float = 0.0
    # While events arrived: from the first event read to the end of the run. The whole run's CPU share
    # hides a generator that was saturated while it mattered, behind the idle connect and start delay.
    cpu_at_first_event: float | None = None
    delivery_busy: float = 0.0  # CPU / wall over that span; merged: the busiest process's

    def add_error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _MAX_ERRORS_KEPT:
            self.error_samples.append(text)


def _request(host: str, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode()


def _ts_of(payload: bytes) -> float | None:
    i = payload.find(b'"ts":')
    if i < 0:
        return None
    i += 5
    end = payload.find(b",", i)
    if end < 0:
        end = payload.find(b"}", i)
    try:
        return float(payload[i:end])
    except ValueError:
        return None


class Inbox:
    """Body bytes read by every watcher of a generator, parsed once the loop's batch of reads is done.

    uvloop (like asyncio) runs every read callback of one poll before any `call_soon` callback, so the
    receive times taken in `add` are spaced only by the reads themselves.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[tuple[Watcher, bytes, float, float | None]] = []
        self._scheduled = False

    def add(self, watcher: "Watcher", data: bytes, received_at: float, arrived_at: float | None) -> None:
        self._items.append((watcher, data, received_at, arrived_at))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        self._scheduled = False
        items, self._items = self._items, []
        for watcher, data, received_at, arrived_at in items:
            watcher.consume(data, received_at, arrived_at)


class Watcher(asyncio.Protocol):
    def __init__(
        self,
        spec: GenSpec,
        path: str,
        result: GenResult,
        connected: asyncio.Future[bool],
        inbox: Inbox,
        *,
        stalled: bool = False,
    ) -> None:
        self._request = _request(spec.host, path)
        self._inbox = inbox
        self.stalled = stalled
        self._count = spec.mode == "count"
        self._result = result
        self._connected = connected
        self.done: asyncio.Future[None] = connected.get_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._in_body = False
        self._chunked = False
        self._raw = b""  # unparsed chunked framing
        self._left = 0  # bytes left in the current chunk
        self._skip = 0  # CRLF after a chunk still to skip
        self._ended = False  # the final zero-length chunk arrived
        self._sse = b""  # unparsed SSE text
        self._last_byte = b""  # count mode: a blank line split across reads
        self._seen: set[int] = set()
        self._max_id = 0
        self.final_id: int | None = None
        self.closing = False  # the parent asked to close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inbox.drain()  # what this watcher read before the close counts
        if not self._connected.done():
            self._connected.set_result(False)
            self._result.add_error(f"closed before the response head: {exc!r}")
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes, arrived_at: float | None = None) -> None:
        """`arrived_at`: when the client's kernel received the newest of these bytes, if it said."""
        now = time.time()
        if not self._in_body:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                return
            self._in_body = True
            self._head = b""
            status_line, _, headers = head[:end].partition(b"\r\n")
            data = head[end + 4 :]
            if not status_line.startswith(b"HTTP/1.1 200"):
                self._result.add_error(status_line.decode(errors="replace"))
                self._connected.set_result(False)
                assert self.transport is not None
                self.transport.close()
                return
            self._chunked = b"transfer-encoding: chunked" in headers.lower()
            self._connected.set_result(True)
            if self.stalled:  # a client that stops reading: the server's sends back up from here
                assert self.transport is not None
                self.transport.pause_reading()
                return
            if not data:
                return
        if self._count:
            self.consume(data, now, arrived_at)
        else:
            self._inbox.add(self, data, now, arrived_at)

    def consume(self, data: bytes, received_at: float, arrived_at: float | None = None) -> None:
        """Body bytes read at `received_at`: dechunk, then count or parse the events they end."""
        body = self._dechunk(data) if self._chunked else data
        if self._count:
            self._count_events(body, received_at)
        elif body:
            self._parse_sse(body, received_at, arrived_at)
        if self._ended and self.transport is not None:
            self.transport.close()

    def _dechunk(self, data: bytes) -> bytes:
        if not (self._raw or self._left or self._skip):
            # The usual read: exactly one whole chunk. With `_parse_sse`'s fast path this takes about a
            # fifth off the generator's Python per event (3.9 to 3.1 µs, warm).
            eol = data.find(b"\r\n")
            if 0 < eol < 9 and data[-2:] == b"\r\n":
                try:
                    size = int(data[:eol], 16)
                except ValueError:  # a chunk extension: the general path below
                    size = 0
                if size and len(data) == eol + 4 + size:
                    return data[eol + 2 : -2]
        buf = self._raw + data if self._raw else data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n and not self._ended:
            if self._left:
                take = min(self._left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._skip = 2
            elif self._skip:
                take = min(self._skip, n - pos)
                pos += take
                self._skip -= take
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].partition(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    self._ended = True
                self._left = size
        self._raw = buf[pos:] if pos < n else b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _count_events(self, body: bytes, now: float) -> None:
        if not body:
            return
        found = body.count(b"\n\n") + (self._last_byte == b"\n" and body[:1] == b"\n")
        self._last_byte = body[-1:]
        if found:
            result = self._result
            result.events += found
            if result.first_event_at > now:
                result.first_event_at = now
                result.cpu_at_first_event = result.cpu_at_first_event or time.process_time()
            result.last_event_at = now

    def _parse_sse(self, body: bytes, now: float, arrived_at: float | None) -> None:
        if not self._sse and body[-2:] == b"\n\n" and body[:4] == b"id: " and body.count(b"\n") == 4:
            # One whole event of an id, an event and a data line, as jobpulse and the floor send them.
            first = body.find(b"\n")
            second = body.find(b"\n", first + 1)
            if body.startswith(b"event: ", first + 1) and body.startswith(b"data: ", second + 1):
                the_id = int(body[4:first])
                self._account(the_id, body[first + 8 : second], body[second + 7 : -2], now, arrived_at)
                return
        blocks = (self._sse + body).split(b"\n\n")
        self._sse = blocks.pop()
        # The read's stamp is its newest byte's: the event those bytes end has its own; one before it in
        # the same read has it too if the server wrote both at once, else a later one.
        last = len(blocks) - 1 if not self._sse else -1
        for i, block in enumerate(blocks):
            event_id: int | None = None
            event_type = b"message"
            payload = b""
            for line in block.split(b"\n"):
                if line[:4] == b"id: ":
                    event_id = int(line[4:])
                elif line[:7] == b"event: ":
                    event_type = line[7:]
                elif line[:6] == b"data: ":
                    payload = line[6:]
            if event_id is not None:  # else comments, `retry:`, the naive app's state snapshot, `lost`
                self._account(event_id, event_type, payload, now, arrived_at, exact=i == last)

    def _account(
        self,
        event_id: int,
        event_type: bytes,
        payload: bytes,
        now: float,
        arrived_at: float | None,
        *,
        exact: bool = True,
    ) -> None:
        result = self._result
        result.events += 1
        if event_id in self._seen:
            result.duplicated += 1
            return
        if event_id < self._max_id:
            result.out_of_order += 1
        else:
            self._max_id = event_id
        self._seen.add(event_id)
        if event_type == b"progress":
            if result.first_event_at > now:
                result.first_event_at = now
                result.cpu_at_first_event = result.cpu_at_first_event or time.process_time()
            result.last_event_at = now
            ts = _ts_of(payload)
            if ts is not None:
                if arrived_at is not None:
                    result.arrival_latencies.append(arrived_at - ts)
                    if exact:
                        result.exact_arrival_latencies.append(arrived_at - ts)
                result.latencies.append(now - ts)
                result.parsed_latencies.append(time.time() - ts)
                if ts < result.min_ts:
                    result.min_ts = ts
        elif event_type == b"status" and any(t in payload for t in _TERMINAL):
            self.final_id = event_id

    def finish(self) -> None:
        """Account for this watcher once its stream is over (or abandoned)."""
        result = self._result
        if self._count or self.stalled:
            return
        if self.final_id is None:
            result.incomplete += 1
            return
        result.expected += self.final_id
        result.lost += self.final_id - len([i for i in self._seen if i <= self.final_id])


async def _run(spec: GenSpec, conn: Connection) -> GenResult:
    loop = asyncio.get_running_loop()
    result = GenResult(watchers=len(spec.paths) + len(spec.stalled_paths))
    gate = asyncio.Semaphore(spec.connect_concurrency)
    inbox = Inbox(loop)
    watchers: list[Watcher] = []

    async def open_one(path: str, stalled: bool = False) -> None:
        async with gate:
            connected: asyncio.Future[bool] = loop.create_future()
            watcher = Watcher(spec, path, result, connected, inbox, stalled=stalled)
            try:
                if spec.mode == "sse":
                    await open_stamped(loop, spec.host, spec.port, watcher)
                else:  # count mode keeps uvloop's own reads: the ceiling needs no stamps, only speed
                    await loop.create_connection(lambda: watcher, spec.host, spec.port)
            except OSError as exc:
                result.add_error(f"connect: {exc!r}")
                return
            watchers.append(watcher)
            try:
                async with asyncio.timeout(30):
                    ok = await connected
            except TimeoutError:
                result.add_error("no response head within 30 s")
                return
            if ok:
                result.connected += 1
                result.stalled += stalled
                result.connected_at = time.time()

    result.connect_started_at = time.time()
    await asyncio.gather(
        *(open_one(path) for path in spec.paths), *(open_one(path, True) for path in spec.stalled_paths)
    )
    conn.send(("ready", result.connected, result.errors))
    if spec.until == "end":
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(spec.timeout_s):
                await asyncio.gather(*(w.done for w in watchers if not w.stalled))
    else:
        await loop.run_in_executor(None, conn.recv)  # "close"
        result.dropped = sum(1 for w in watchers if w.done.done())
    inbox.drain()
    if result.cpu_at_first_event is not None and (span := time.time() - result.first_event_at) > 0:
        result.delivery_busy = (time.process_time() - result.cpu_at_first_event) / span
    for watcher in watchers:
        if watcher.transport is not None and not watcher.transport.is_closing():
            watcher.transport.abort()
        watcher.finish()
    await asyncio.sleep(0)
    return result


def generator_main(spec: GenSpec, conn: Connection) -> None:
    """Entry point of a generator process."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    cpu = time.process_time()
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; without it, plain asyncio
        result = asyncio.run(_run(spec, conn))
    else:
        result = uvloop.run(_run(spec, conn))
    result.cpu_s = time.process_time() - cpu
    result.wall_s = time.monotonic() - started
    conn.send(("result", result))
    conn.close()
