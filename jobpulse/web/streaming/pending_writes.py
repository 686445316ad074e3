"""Deliveries deferred to the end of the hub's current read, so each stream writes once per read."""

import asyncio
import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None:
        """Deliver or write whatever is pending; must not block."""


class PendingWrites:
    """Flushed once each when the loop next runs, after the hub's current read: the jobs' channels with
    news (`web/hub.py`), and the streams with events queued (`web/detached_stream.py`).

    Each `write` to a socket is a system call, and on a busy process most of its CPU: when the hub falls
    behind and reads several events of a job at once, each of its streams writes them in one call, so
    the busier the process, the less each event costs.
    """

    __slots__ = ("_due", "_handle")

    def __init__(self) -> None:
        self._due: list[Flushable] = []
        self._handle: asyncio.Handle | None = None

    def add(self, item: Flushable) -> None:
        self._due.append(item)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        due, self._due, self._handle = self._due, [], None
        for item in due:
            try:
                item.flush()
            except Exception:  # one bug must not leave the other streams unwritten
                logger.exception("stream write failed")
