"""Every Redis key and channel jobpulse uses, built here and only here.

A job's keys share the hash tag ``{job_id}`` so they live in one Redis Cluster slot: the event append
touches the state hash and the stream in one script, and announces on the channel with `SPUBLISH`, which
Cluster allows only within a slot.

Two Redis roles (`Settings`): the *store's* (`REDIS_URL`, may be a cluster) holds each job's state,
history and channel and the submission limits; the *queue's* (`JOBPULSE_QUEUE_REDIS_URL`, one node, by
default the same Redis) holds arq's keys and the workers' bookkeeping that goes with them: running
attempts, the unfinished index and the reconciler's lease, each one key for all jobs.
"""

PREFIX = "jobpulse"


def state_key(job_id: str) -> str:
    """Hash with the job's current state, for O(1) reads."""
    return f"{PREFIX}:{{{job_id}}}:state"


def events_key(job_id: str) -> str:
    """Stream with the job's ordered, replayable event history."""
    return f"{PREFIX}:{{{job_id}}}:events"


def live_channel(job_id: str) -> str:
    """Pub/sub channel that announces each new event to web processes watching the job (a shard channel,
    `SPUBLISH`/`SSUBSCRIBE`, on a cluster)."""
    return f"{PREFIX}:{{{job_id}}}:live"


def running_attempts_key() -> str:
    """Sorted set of running attempts (`job_id:attempt`), scored by their last heartbeat (Redis ms); on
    the queue's Redis."""
    return f"{PREFIX}:running"


def unfinished_jobs_key(queue_name: str) -> str:
    """Sorted set of every job of `queue_name` not finished yet, scored by its latest status change or
    check (Redis ms).

    On the queue's Redis. The append script keeps it (added on each non-final status, removed on the final
    one), or the store beside the script when the queue lives apart (`jobpulse.store`); the reconciler
    (`jobpulse.worker.reconciler`) of that queue's workers reads the oldest entries to find jobs arq no
    longer holds. One per queue: a queue's workers know only their own queue.
    """
    return f"{PREFIX}:unfinished:{queue_name}"


def reconciler_lease_key(queue_name: str) -> str:
    """Held by the one worker of `queue_name` whose reconciler runs now (`SET NX PX`); on the queue's
    Redis."""
    return f"{PREFIX}:reconciler:{queue_name}"


def submission_rate_key(client: str) -> str:
    """When `client` may next submit, in Redis ms (the submission rate limiter's only state); on the
    store's Redis, one slot per client on a cluster."""
    return f"{PREFIX}:rate:submit:{client}"


# arq's `health_check_key` default (`<queue>:health-check`) is one key for every worker on the queue:
# with four workers, `arq --check` passed while any one was alive, and one worker stopping deleted the
# key the other three's checks read. Ours adds the host name, which is the container's in Docker and
# the pod's on Kubernetes, and which `arq --check` computes the same in the same container.
HEALTH_CHECK_SUFFIX = ":health-check:"


def worker_health_check_key(queue_name: str, host: str) -> str:
    """The key the worker on `host` refreshes and `arq --check` with the same settings there reads."""
    return f"{queue_name}{HEALTH_CHECK_SUFFIX}{host}"
