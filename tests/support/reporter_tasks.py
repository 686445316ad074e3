"""A task registry whose task reports its progress from a thread or a process pool (`progress_reporter`).

`count_up` runs `count` in a thread (`asyncio.to_thread`, or a ThreadPoolExecutor) or in a process pool
(fork or spawn) and returns where it ran. When a report raises JobAborted, `count` writes the `marker`
file (the step it stopped at, and its pid) before letting it propagate, so a test can see that the thread
or process itself heard of the cancel; and `<marker>.task` when the JobAborted came back to the task.
"""

import asyncio
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from jobpulse import JobAborted, TaskRegistry, progress_reporter
from jobpulse.worker.reporter import Report

registry = TaskRegistry()

Via = Literal["to_thread", "thread_pool", "fork", "spawn"]


class CountParams(BaseModel):
    via: Via
    steps: int = 20
    pause_ms: float = 0
    upto: float = 100  # the last report's percent
    marker: str | None = None


def count(report: Report, steps: int, pause_s: float, upto: float, marker: str | None) -> dict[str, Any]:
    """Reports `upto * step / steps` for each step, `pause_s` apart; runs off the event loop."""
    for step in range(1, steps + 1):
        if pause_s:
            time.sleep(pause_s)
        try:
            report(upto * step / steps, f"step {step}", current=step, total=steps)
        except JobAborted:
            if marker is not None:
                Path(marker).write_text(f"{step} {os.getpid()}")
            raise
    return {"steps": steps, "pid": os.getpid()}


def _executor(via: Via) -> Executor:
    if via == "thread_pool":
        return ThreadPoolExecutor(1)
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(via))


@registry.task
async def count_up(ctx: dict[str, Any], params: CountParams) -> dict[str, Any]:
    """`count` off the loop; if JobAborted comes back to the task, it writes `<marker>.task` too."""
    try:
        return await _count_off_the_loop(progress_reporter(ctx), params)
    except JobAborted:
        if params.marker is not None:
            Path(f"{params.marker}.task").write_text("JobAborted")
        raise


async def _count_off_the_loop(report: Report, params: CountParams) -> dict[str, Any]:
    args = (report, params.steps, params.pause_ms / 1000, params.upto, params.marker)
    if params.via == "to_thread":
        return await asyncio.to_thread(count, *args)
    executor = _executor(params.via)
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, count, *args)
    finally:
        # Never wait here, on the event loop: a cancelled job's thread or process ends at its next report.
        executor.shutdown(wait=False, cancel_futures=True)
