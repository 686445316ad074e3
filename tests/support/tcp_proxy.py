"""A TCP proxy on 127.0.0.1 that can go silent without closing anything, like a dead network path."""

import asyncio
import contextlib

from jobpulse.stack.redis_server import free_port


class FreezableProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._frozen: set[asyncio.Event] = set()  # one "thawed" event per live connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def freeze_open_connections(self) -> None:
        """Stop forwarding on every connection open now; keep the sockets open. New ones still work."""
        for flowing in self._frozen:
            flowing.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):  # a test's teardown must never hang on a proxy
                    await self._server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # Known before the upstream connection exists, so a `stop()` meanwhile closes it too: an accepted
        # connection left open kept `wait_closed()` waiting for ever (a hang seen once under heavy load).
        self._writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self._writers.add(server_writer)
        if self._server is None or not self._server.is_serving():
            server_writer.close()  # stopped while connecting upstream
            client_writer.close()
            return
        flowing = asyncio.Event()
        flowing.set()
        self._frozen.add(flowing)
        for source, sink in ((client_reader, server_writer), (server_reader, client_writer)):
            task = asyncio.create_task(self._pipe(source, sink, flowing))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                await flowing.wait()  # frozen: hold the bytes for ever, like a black-holed route
                sink.write(data)
                await sink.drain()
        sink.close()
