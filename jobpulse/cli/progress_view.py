"""How a watched job is shown: a live rich progress bar on a terminal, else one line per event.

Each display gets the job's state first (`show_job`), then every event with its id (`show_event`), and
`show_result` once the job has succeeded, after the display has been closed (`with display:`).
"""

import json
import math
import os
import sys
import time
from typing import IO, Protocol

from pydantic import JsonValue
from rich import filesize
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text

from jobpulse.cli.rate import RateEstimator
from jobpulse.client import JobEvent
from jobpulse.models import JobView, LostEvent, ProgressEvent, StatusEvent
from jobpulse.status import EventType, JobStatus

# Tasks whose `current`/`total` count bytes, so their rate reads "12.3 MB/s".
BYTE_COUNTING_TASKS = frozenset({"process_upload"})


class JobDisplay(Protocol):
    def __enter__(self) -> object: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def show_job(self, job: JobView) -> None: ...

    def show_event(self, event_id: int | None, event: JobEvent) -> None: ...

    def show_result(self, result: JsonValue) -> None: ...


def live_view_wanted(stream: IO[str]) -> bool:
    """A live bar on a terminal; rich's own TTY_INTERACTIVE=1 or 0 overrides the detection."""
    override = os.environ.get("TTY_INTERACTIVE")
    if override in ("0", "1"):
        return override == "1"
    dumb = os.environ.get("TERM", "").lower() in ("dumb", "unknown")
    return stream.isatty() and not dumb


def write_line(line: str, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(f"{line}\n")
    stream.flush()  # a line per event is only useful if it arrives when the event does


def status_line(event: StatusEvent) -> str:
    line = f"status {event.status}"
    if event.attempt:
        line += f" (attempt {event.attempt})"
    if event.error:
        line += f": {event.error}"
    return line


def progress_line(event: ProgressEvent) -> str:
    return f"{event.progress:.1f}% {event.message}" if event.message else f"{event.progress:.1f}%"


def lost_line(event: LostEvent) -> str:
    return (
        f"events {event.last_event_id + 1} to {event.first_retained_id - 1} are no longer kept; "
        f"the job was {event.job.status} at {event.job.progress:.1f}%"
    )


def event_type(event: JobEvent) -> EventType:
    if isinstance(event, ProgressEvent):
        return EventType.PROGRESS
    return EventType.STATUS if isinstance(event, StatusEvent) else EventType.LOST


def result_json(result: JsonValue) -> str:
    return json.dumps(result, ensure_ascii=False)


class _LineDisplay:
    def __enter__(self) -> object:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def show_job(self, job: JobView) -> None:
        pass


class PlainDisplay(_LineDisplay):
    """`42.0% step 8/20`, `status running (attempt 1)`: one line per event, then the result's JSON."""

    def show_event(self, event_id: int | None, event: JobEvent) -> None:
        if isinstance(event, ProgressEvent):
            write_line(progress_line(event))
        elif isinstance(event, StatusEvent):
            write_line(status_line(event))
        else:
            write_line(lost_line(event))

    def show_result(self, result: JsonValue) -> None:
        write_line(result_json(result))


class JsonLinesDisplay(_LineDisplay):
    """One JSON object per event: `event`, `id` (null for `lost`) and the event's data, nulls left out.

    The last line is the terminal status event, which carries the result; nothing follows it.
    """

    def show_event(self, event_id: int | None, event: JobEvent) -> None:
        data = event.model_dump(mode="json", exclude_none=True)
        line = {"event": event_type(event), "id": event_id, **data}
        write_line(json.dumps(line, ensure_ascii=False, separators=(",", ":")))

    def show_result(self, result: JsonValue) -> None:
        pass


_STATUS_STYLES = {
    JobStatus.QUEUED: "dim",
    JobStatus.RUNNING: "cyan",
    JobStatus.RETRYING: "yellow",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "yellow",
}
_FINAL_MARKS = {JobStatus.SUCCEEDED: "✓", JobStatus.FAILED: "✗", JobStatus.CANCELLED: "■"}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def clock(seconds: float, *, up: bool = False) -> str:
    """H:MM:SS; `up` rounds up, so time left reads 0:00:00 only when nothing is left."""
    seconds = max(0, math.ceil(seconds) if up else round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _JobTracker:
    """What the live bar shows beyond rich's own task: status, rate, ETA, and how long the run took."""

    def __init__(self, job: JobView) -> None:
        self.bytes = job.task in BYTE_COUNTING_TASKS
        self.status = job.status
        self.estimate = RateEstimator()
        self.remaining_s: float | None = None
        self.estimated_at = time.monotonic()
        self.started_ts: float | None = None
        self.took_s: float | None = None

    def on_status(self, event: StatusEvent) -> None:
        self.status = event.status
        if event.status == JobStatus.RUNNING:
            self.estimate.restart()
            self.started_ts = event.ts
        elif event.status.is_terminal and self.started_ts is not None:
            self.took_s = event.ts - self.started_ts

    def on_progress(self, event: ProgressEvent) -> None:
        self.estimate.add(event)
        self.remaining_s = self.estimate.remaining_s
        self.estimated_at = time.monotonic()

    def rate_text(self) -> str:
        rate = self.estimate.rate
        if rate is None or self.status.is_terminal:
            return ""
        if not self.estimate.counted:
            return f"{rate:.1f}%/s"
        return f"{filesize.decimal(int(rate))}/s" if self.bytes else f"{rate:,.1f}/s"

    def eta_text(self) -> str:
        if self.status.is_terminal:
            return f"took {clock(self.took_s)}" if self.took_s is not None else ""
        if self.status != JobStatus.RUNNING or self.remaining_s is None:
            return "ETA -:--:--"
        return f"ETA {clock(self.remaining_s - (time.monotonic() - self.estimated_at), up=True)}"


class _StatusColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        tracker: _JobTracker = task.fields["tracker"]
        status, style = tracker.status, _STATUS_STYLES[tracker.status]
        if status.is_terminal:
            return Text(f"{_FINAL_MARKS[status]} {status}", style=style)
        frame = _SPINNER[int(time.monotonic() * 12) % len(_SPINNER)]
        return Text(f"{frame} {status}", style=style)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        tracker: _JobTracker = task.fields["tracker"]
        return Text(tracker.rate_text(), style="progress.data.speed")


class _EtaColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        tracker: _JobTracker = task.fields["tracker"]
        return Text(tracker.eta_text(), style="progress.remaining")


class LiveDisplay:
    """A rich progress bar: status, bar, percent, the task's message, rate and time left."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(force_terminal=True, force_interactive=True, highlight=False)
        self.progress = Progress(
            _StatusColumn(table_column=Column(min_width=11)),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn(
                "{task.fields[message]}", markup=False, table_column=Column(no_wrap=True, max_width=48)
            ),
            _RateColumn(),
            _EtaColumn(),
            console=self.console,
            refresh_per_second=8,
        )
        self._task: TaskID | None = None
        self._tracker: _JobTracker | None = None

    def __enter__(self) -> object:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def show_job(self, job: JobView) -> None:
        self._tracker = _JobTracker(job)
        self.progress.console.print(
            Text.assemble(("job ", "dim"), (job.id, "bold"), (f" ({job.task})", "dim"))
        )
        self._task = self.progress.add_task(job.task, total=100, message="", tracker=self._tracker)
        self.progress.update(self._task, completed=job.progress, message=job.message or "")

    def show_event(self, event_id: int | None, event: JobEvent) -> None:
        if self._task is None or self._tracker is None:
            return
        if isinstance(event, ProgressEvent):
            self._tracker.on_progress(event)
            self.progress.update(self._task, completed=event.progress, message=event.message or "")
        elif isinstance(event, StatusEvent):
            self._tracker.on_status(event)
            if event.status == JobStatus.RETRYING:
                self.progress.console.print(Text(status_line(event), style="yellow"))
            if event.status == JobStatus.SUCCEEDED:
                self.progress.update(self._task, completed=100)
        else:
            self.progress.console.print(Text(lost_line(event), style="yellow"))
            self.progress.update(self._task, completed=event.job.progress, message=event.job.message or "")

    def show_result(self, result: JsonValue) -> None:
        self.console.print_json(data=result)


def make_display(*, json_lines: bool) -> JobDisplay:
    """JSON lines when asked for, else the live bar on a terminal, else plain lines."""
    if json_lines:
        return JsonLinesDisplay()
    if live_view_wanted(sys.stdout):
        return LiveDisplay()
    return PlainDisplay()
