"""A Python client for jobpulse: submit jobs, follow their progress, wait for their results.

```python
from jobpulse.client import Client

with Client() as client:  # JOBPULSE_URL, else http://127.0.0.1:8000
    job = client.submit("simulate", steps=20, interval_ms=200)
    result = client.wait(job.id, on_progress=lambda event: print(event.progress))
```

Built on the job's Server-Sent Events stream. A dropped connection or a restarted web process is
invisible to the caller: the client reconnects (after the server's `retry:` hint, then with capped
exponential backoff) and resumes after the last event it handed out, so no event is lost or repeated.
`AsyncClient` is the same with `await`. Every exception subclasses `JobpulseError`.
"""

from jobpulse.client.aio import AsyncClient, AsyncEventStream
from jobpulse.client.errors import (
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobpulseError,
    RequestRejected,
    ServerUnavailable,
    UnexpectedResponse,
    WaitTimeout,
)
from jobpulse.client.resume import JobEvent
from jobpulse.client.sync import Client, EventStream

__all__ = [
    "AsyncClient",
    "AsyncEventStream",
    "Client",
    "EventStream",
    "JobCancelled",
    "JobEvent",
    "JobFailed",
    "JobNotFound",
    "JobpulseError",
    "RequestRejected",
    "ServerUnavailable",
    "UnexpectedResponse",
    "WaitTimeout",
]
