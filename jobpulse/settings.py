"""One settings class for the web app, the worker and the local stack runner.

``REDIS_URL`` is unprefixed because it is the variable every Redis-backed tool and platform already sets;
everything else is ``JOBPULSE_``-prefixed. Build it where the process starts (app factory, worker startup),
never at import time, so tests can pass their own.
"""

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobpulse.logs import LogFormat

# Lists in the environment are comma-separated (`JOBPULSE_CORS_ORIGINS=https://a.example,https://b.example`),
# not JSON, so they read as they would in any shell or compose file.
CommaSeparated = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    # Errors name the variable, never echo its value: some of them are secrets.
    model_config = SettingsConfigDict(env_prefix="JOBPULSE_", extra="ignore", hide_input_in_errors=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias="REDIS_URL",
        description=(
            "Redis for the job events, state and live announcements (and the queue, unless "
            "JOBPULSE_QUEUE_REDIS_URL is set); any one node of a cluster with JOBPULSE_REDIS_CLUSTER."
        ),
    )
    redis_cluster: bool = Field(
        default=False,
        description=(
            "REDIS_URL names one node of a Redis Cluster: the rest are discovered from it, each job's keys "
            "live on its slot's shard and announcements use sharded pub/sub. Needs JOBPULSE_QUEUE_REDIS_URL."
        ),
    )
    queue_redis_url: str | None = Field(
        default=None,
        description=(
            "Redis (one node, not a cluster) for arq's queue and the workers' bookkeeping (heartbeats, the "
            "reconciler's index); REDIS_URL when unset."
        ),
    )
    queue_name: str = Field(default="arq:queue", description="arq queue that jobs are enqueued on.")
    tasks: str | None = Field(
        default=None,
        description=(
            "The task registry to serve, as `module:attribute` (`myapp.tasks:tasks`), for `jobpulse web`, "
            "`jobpulse worker` and `jobpulse up`; the reference service serves its demo tasks without it."
        ),
    )

    # Worker side
    progress_interval_ms: int = Field(
        default=100,
        ge=0,
        le=60_000,
        description="Progress updates closer together than this are coalesced to the latest; 0 turns it off.",
    )
    job_timeout_s: float = Field(default=3600, gt=0, description="A job running longer than this fails.")
    max_tries: int = Field(default=3, ge=1, le=100, description="Attempts before a retried job fails.")
    max_jobs: int = Field(default=10, ge=1, description="Jobs one worker process runs at once.")
    worker_redis_pool_size: int = Field(
        default=10,
        ge=2,
        description=(
            "Redis connections one worker process uses at most, however many jobs it runs; a command "
            "waits for a free one."
        ),
    )
    worker_poll_delay_s: float = Field(
        default=0.2, gt=0, le=10, description="How often a worker polls for new jobs and cancellations."
    )
    shutdown_grace_s: int = Field(
        default=0,
        ge=0,
        le=86_400,
        description=(
            "On SIGTERM a worker takes no new jobs and lets running ones finish for this long before "
            "interrupting them (they are retried); 0 interrupts at once."
        ),
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, le=60, description="A worker records that each running job is alive this often."
    )
    stall_after_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A running job without a heartbeat for this long has lost its worker: it is retried.",
    )
    reconcile_after_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "A job recorded `queued` or `retrying` that arq holds nowhere, or `running` without a heartbeat, "
            "this long after its last status is queued again (or failed, saying why); workers check a "
            "quarter as often."
        ),
    )
    worker_health_check_s: float = Field(
        default=15.0,
        ge=1,
        le=3600,
        description=(
            "A worker records that it is alive this often (arq's health check, kept one second longer); "
            "`arq --check worker.WorkerSettings` fails once it has not."
        ),
    )

    # Event history
    stream_maxlen: int = Field(
        default=10_000, ge=10, description="Events kept per job; older ones are trimmed."
    )
    retention_s: int = Field(
        default=86_400, ge=1, description="How long a finished job's state and history are kept."
    )
    active_ttl_s: int = Field(
        default=7 * 86_400,
        ge=60,
        description="Expiry of an unfinished job's keys, refreshed on every event, so abandoned jobs vanish.",
    )

    # Web side
    keepalive_s: float = Field(
        default=15.0, gt=0, le=300, description="Seconds between SSE keep-alive comments."
    )
    sse_retry_ms: int = Field(default=2000, ge=0, description="`retry:` hint sent to SSE clients.")
    send_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="An SSE client that takes no bytes for this long is dropped; it can resume later.",
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest accepted request body.")
    subscriber_buffer: int = Field(
        default=256,
        ge=8,
        description="Events buffered per SSE client; a client further behind re-reads from Redis instead.",
    )
    redis_reconnect_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A worker that loses Redis keeps retrying this long before it exits (and is restarted).",
    )
    redis_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="A Redis command or connect taking longer fails (503)."
    )
    hub_ping_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="The hub pings Redis this often; silent for two intervals, its connection is replaced.",
    )
    redis_pool_size: int = Field(
        default=8, ge=2, description="Redis connections one web process uses, however many clients it serves."
    )

    # Uploads (both sides: the web writes them, the worker reads and sweeps them)
    upload_dir: Path = Field(
        default=Path("var/uploads"),
        description="Directory the web app stores uploads in and the worker reads them from (shared).",
    )
    max_upload_bytes: int = Field(
        default=1_000_000_000, ge=1, description="Largest accepted upload; a larger one is refused with 413."
    )
    upload_retention_s: int = Field(
        default=86_400, ge=60, description="Uploaded files older than this are deleted by the worker."
    )
    upload_throttle_bytes_per_s: int = Field(
        default=0,
        ge=0,
        description="Process uploads no faster than this, so the bars visibly move in demos; 0 = no limit.",
    )

    # Access control and limits
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated keys accepted as `Authorization: Bearer KEY`. Set, they are required to submit, "
            "upload and cancel, and reading a job needs a key or its token; empty leaves the API open."
        ),
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Signs the per-job read tokens; required with `JOBPULSE_API_KEYS` and the same on every web "
            "process. Use 32 random bytes or more: "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        ),
    )
    token_ttl_s: int = Field(
        default=86_400, ge=60, description="A job's read token expires this long after it is issued."
    )
    cors_origins: CommaSeparated = Field(
        default=(),
        description="Comma-separated origins (`https://app.example`) whose pages may call the API.",
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="Let those origins send cookies or HTTP authentication; not allowed with origin `*`.",
    )
    submissions_per_minute: int = Field(
        default=300,
        ge=0,
        description=(
            "Jobs and uploads one client (API key, else IP address) may submit a minute, across all web "
            "processes; more get 429 with Retry-After. 0 = no limit."
        ),
    )
    max_streams: int = Field(
        default=0,
        ge=0,
        description=(
            "Event streams and long-polls one web process holds at once; more get 503 with Retry-After "
            "before any 200. 0 = what the open-file limit allows, less 256."
        ),
    )
    max_streams_per_client: int = Field(
        default=100,
        ge=0,
        description=(
            "Event streams and long-polls one client may hold open at once on one web process; more get "
            "429. 0 = no limit."
        ),
    )

    # Observability (docs/OBSERVABILITY.md)
    log_format: LogFormat = Field(
        default="auto",
        description=(
            "`json` (one object a line), `text`, or `auto`: JSON unless the output is a terminal. Web and "
            "worker alike."
        ),
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "Set, `GET /metrics` requires `Authorization: Bearer TOKEN` (give Prometheus this, not an API "
            "key); unset, it is open."
        ),
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="A worker serves its Prometheus metrics on this port (all interfaces); 0 = not at all.",
    )

    # Tests only
    test_enqueue_gate: Path | None = Field(
        default=None,
        description=(
            "Tests only: a directory; the web then holds each submission between recording the job and "
            "enqueueing it until the test allows it (`<dir>/<id>.enqueue`). Never set it in production."
        ),
    )

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("queue_redis_url", mode="before")
    @classmethod
    def _empty_queue_url_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("token_secret", "metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`JOBPULSE_TOKEN_SECRET=` (as compose passes an unset variable through) means no secret."""
        return None if value == "" else value

    @property
    def queue_url(self) -> str:
        """Where arq's queue lives: `JOBPULSE_QUEUE_REDIS_URL`, else `REDIS_URL`."""
        return self.queue_redis_url or self.redis_url

    @property
    def queue_apart(self) -> bool:
        """The queue is on another Redis than the job store (or the store is a cluster): no script may
        touch both, so what goes with the queue is written beside the store's script, not inside it."""
        return self.redis_cluster or self.queue_url != self.redis_url

    @model_validator(mode="after")
    def _cluster_needs_a_queue_redis(self) -> "Settings":
        if self.redis_cluster and self.queue_redis_url is None:
            raise ValueError(
                "JOBPULSE_REDIS_CLUSTER is set but JOBPULSE_QUEUE_REDIS_URL is not: arq's queue cannot live "
                "on a Redis Cluster; point JOBPULSE_QUEUE_REDIS_URL at a single Redis node"
            )
        return self

    @model_validator(mode="after")
    def _keys_need_a_token_secret(self) -> "Settings":
        if self.api_keys and self.token_secret is None:
            raise ValueError(
                "JOBPULSE_API_KEYS is set but JOBPULSE_TOKEN_SECRET is not: set it (the same on every web "
                "process) so that job read tokens can be signed"
            )
        if self.token_secret is not None and len(self.token_secret.get_secret_value()) < 16:
            raise ValueError("JOBPULSE_TOKEN_SECRET must be at least 16 characters")
        return self

    @model_validator(mode="after")
    def _no_credentials_for_every_origin(self) -> "Settings":
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "JOBPULSE_CORS_ALLOW_CREDENTIALS cannot be used with origin '*': list the origins instead"
            )
        return self

    @model_validator(mode="after")
    def _stall_outlasts_heartbeats(self) -> "Settings":
        if self.stall_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                "JOBPULSE_STALL_AFTER_S must be at least twice JOBPULSE_HEARTBEAT_INTERVAL_S, "
                "or one late heartbeat would have a live job retried"
            )
        return self
