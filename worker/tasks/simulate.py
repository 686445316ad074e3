"""`simulate`: a task that only reports progress, for demos, tests and benchmarks."""

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobpulse import progress


class SimulateParams(BaseModel):
    """Emit `steps` progress updates ending at 100, `interval_ms` apart, after `start_delay_ms`."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(ge=1, le=100_000, description="Number of progress updates.")
    interval_ms: int = Field(ge=0, le=60_000, description="Pause between updates.")
    start_delay_ms: int = Field(default=0, ge=0, le=60_000, description="Pause before the first update.")
    fail_at: int | None = Field(
        default=None, ge=1, le=100_000, description="Raise an error at this step instead of reporting it."
    )


class SimulatedFailure(RuntimeError):
    """The failure `fail_at` asks for."""


async def simulate(ctx: dict[str, Any], params: SimulateParams) -> dict[str, int]:
    if params.start_delay_ms:
        await asyncio.sleep(params.start_delay_ms / 1000)
    # Steps keep to a timetable (step k at start + (k-1) * interval) rather than sleeping a full interval
    # after each report: a slow publish then shortens the next wait instead of slowing the whole job, so
    # `steps` and `interval_ms` say what load it offers.
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step in range(1, params.steps + 1):
        if step > 1 and params.interval_ms:
            await asyncio.sleep(max(0.0, started + (step - 1) * params.interval_ms / 1000 - loop.time()))
        if params.fail_at == step:
            raise SimulatedFailure(f"simulated failure at step {step} of {params.steps}")
        message = f"step {step}/{params.steps}"
        await progress(ctx, 100 * step / params.steps, message, current=step, total=params.steps)
    return {"steps": params.steps}
