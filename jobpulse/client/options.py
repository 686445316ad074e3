"""How a client is configured: where the server is, who it is, and how long to wait for what.

Shared by `Client` and `AsyncClient` so both read the environment, send the same headers and use the same
timeouts.
"""

import os
from dataclasses import dataclass

import httpx

from jobpulse.client.backoff import Backoff

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "JOBPULSE_URL"
TOKEN_ENV = "JOBPULSE_TOKEN"
# Three of the server's 15 s keep-alive intervals: a live stream always says something sooner, so only a
# dead connection (a dropped NAT entry, a partition) reaches it.
STREAM_READ_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class ClientOptions:
    base_url: str
    token: str | None
    timeout: float
    reconnect_timeout: float
    max_backoff: float
    stream_read_timeout: float

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        *,
        token: str | None,
        timeout: float,
        reconnect_timeout: float,
        max_backoff: float,
        stream_read_timeout: float,
    ) -> "ClientOptions":
        """Arguments first, then `JOBPULSE_URL` / `JOBPULSE_TOKEN`, then the local default server."""
        url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"The jobpulse base URL must be an http(s) URL like {DEFAULT_URL}, not {url!r}.")
        for name, value in (
            ("timeout", timeout),
            ("stream_read_timeout", stream_read_timeout),
            ("max_backoff", max_backoff),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be more than 0 seconds, not {value!r}.")
        if not reconnect_timeout >= 0:
            raise ValueError(f"reconnect_timeout must be 0 seconds or more, not {reconnect_timeout!r}.")
        return cls(
            base_url=url.rstrip("/"),
            token=token if token is not None else os.environ.get(TOKEN_ENV) or None,
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
            max_backoff=max_backoff,
            stream_read_timeout=stream_read_timeout,
        )

    def headers(self) -> dict[str, str]:
        """Sent with every request: the token is an API key, or one job's read token."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request_timeout(self, *, extra_read: float = 0.0, remaining: float | None = None) -> httpx.Timeout:
        """Timeouts of a plain request; a long-poll adds the time the server may hold it (`extra_read`)."""
        return self._capped(httpx.Timeout(self.timeout, read=self.timeout + extra_read), remaining)

    def stream_timeout(self, read: float, remaining: float | None = None) -> httpx.Timeout:
        return self._capped(httpx.Timeout(self.timeout, read=read), remaining)

    def backoff(self, url: str) -> Backoff:
        return Backoff(url, reconnect_timeout=self.reconnect_timeout, max_backoff=self.max_backoff)

    @staticmethod
    def _capped(timeout: httpx.Timeout, remaining: float | None) -> httpx.Timeout:
        """No single step may outlast a `wait()` deadline."""
        if remaining is None:
            return timeout

        def cap(value: float | None) -> float:
            return max(0.001, remaining if value is None else min(value, remaining))

        return httpx.Timeout(
            connect=cap(timeout.connect),
            read=cap(timeout.read),
            write=cap(timeout.write),
            pool=cap(timeout.pool),
        )
