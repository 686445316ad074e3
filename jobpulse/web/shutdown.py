"""Ending open SSE streams as soon as the process is asked to stop.

On SIGTERM or Ctrl-C, uvicorn stops accepting connections and then waits for the open ones to finish
before it runs the app's shutdown; an SSE stream does not finish until its job does, so without help
uvicorn waits for ever (or until `--timeout-graceful-shutdown` cuts them). So we chain in front of the
server's own signal handler: the hub closes every stream at once, each with a short `retry:`, and clients
reconnect — to this process's successor or another replica — with their `Last-Event-ID`.
"""

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def on_stop_signal(callback: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM first schedule `callback` in the running loop, then act as before."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can handle signals; the server's own handling is all there is
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def handle(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous[signal.Signals(sig)]
        if callable(before):
            before(sig, frame)
        elif before == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in _SIGNALS:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig in _SIGNALS:
            if signal.getsignal(sig) is handle:
                signal.signal(sig, previous[sig])
