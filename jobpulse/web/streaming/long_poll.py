"""Long-polling for a job's end, for clients that cannot read Server-Sent Events."""

import asyncio

from jobpulse.web.streaming.hub import Hub

MAX_WAIT_S = 60.0


async def wait_until_terminal(hub: Hub, job_id: str, after: int, wait_s: float) -> None:
    """Return once the job's terminal event is published after event `after`, or after `wait_s` seconds.

    A hub subscription rather than a loop of reads: it reads the job's stream once (the events since
    `after`, normally none) and then only hears live announcements.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    subscription = await hub.open(job_id, after)
    try:
        while not subscription.finished and not subscription.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await subscription.next_chunk(idle_timeout=remaining)
    finally:
        hub.release(subscription)
