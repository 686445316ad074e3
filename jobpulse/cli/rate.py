"""How fast a job progresses and how long it has left, from its progress events."""

from collections import deque

from jobpulse.models import ProgressEvent


class RateEstimator:
    """Rate and time left over the last `window_s` seconds of a job's progress events.

    It counts `current` of `total` when the task reports them, else percent. Time is the events' own `ts`
    (the worker's clock), not when they arrived, so a replayed history (watching a job that started
    earlier) gives the figures it had live. A count going backwards (a retried job starting over) starts
    the estimate afresh, and so does `restart()`, called when an attempt starts running.
    """

    def __init__(self, window_s: float = 10.0, min_span_s: float = 0.5) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self.counted = False  # done/total are `current`/`total`, not percent
        self.done = 0.0
        self.total = 100.0
        self._samples: deque[tuple[float, float]] = deque()

    def restart(self) -> None:
        self._samples.clear()

    def add(self, event: ProgressEvent) -> None:
        counted = event.current is not None and bool(event.total)
        if counted:
            assert event.current is not None and event.total is not None
            done, total = float(event.current), float(event.total)
        else:
            done, total = event.progress, 100.0
        if counted != self.counted or (self._samples and done < self._samples[-1][1]):
            self._samples.clear()
        self._samples.append((event.ts, done))
        # Keep the newest sample at least window_s old, so the window spans window_s once it can.
        while len(self._samples) > 2 and event.ts - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        self.counted, self.done, self.total = counted, done, total

    @property
    def rate(self) -> float | None:
        """Units (counts, else percent) per second; None until the samples span `min_span_s`.

        (A rate over a shorter span is mostly noise: a task's first update often comes right as it starts.)
        """
        if len(self._samples) < 2:
            return None
        (first_ts, first), (last_ts, last) = self._samples[0], self._samples[-1]
        if last_ts - first_ts < self.min_span_s:
            return None
        return (last - first) / (last_ts - first_ts)

    @property
    def remaining_s(self) -> float | None:
        """Seconds left at the current rate, as of the newest event; None when it cannot be told."""
        rate = self.rate
        if rate is None or rate <= 0:
            return None
        return max(self.total - self.done, 0.0) / rate
