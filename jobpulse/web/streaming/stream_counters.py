"""The per-process counters the stream code bumps in place, read by `web/metrics.py` when scraped."""


class StreamCounters:
    """Counts the event streams' work in this process; bumped in place by the stream code.

    - `delivered`: events written to SSE clients (a chunk of three events adds 3; keep-alives add 0).
    - `slow_dropped`: streams dropped because the client took no bytes for `JOBPULSE_SEND_TIMEOUT_S`.
    - `hub_reconnects`: times the hub's pub/sub connection to Redis was lost and made again.

    Plain ints on `__slots__`: a scrape reads them from the same event loop thread that bumps them.
    """

    __slots__ = ("delivered", "hub_reconnects", "slow_dropped")

    def __init__(self) -> None:
        self.delivered = 0
        self.slow_dropped = 0
        self.hub_reconnects = 0
