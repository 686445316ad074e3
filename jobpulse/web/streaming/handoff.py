"""Taking an event stream's connection over from uvicorn once the response head is out.

An SSE response lives for minutes to hours, and while it lives under ASGI it keeps everything the server and
the app built to answer one request: uvicorn's parser, request cycle and events, the request's task and the
frames of every middleware: several times the memory of a handed-off stream (docs/PERFORMANCE.md has the
figures), and every event woke each stream's task to pass through the same layers. After the head has gone out
through the app and its middleware as usual, none of that is needed: what is left of the response is bytes
written to a socket. So the stream takes the socket's transport for itself (`transport.set_protocol`), tells
uvicorn's request cycle that its client is gone, and lets the request task end.

This reaches into uvicorn's httptools protocol, so it is done only when everything is as expected (the
exact classes, a chunked body under way, nothing pipelined behind it, no TLS) and otherwise declined:
the caller then serves the stream through ASGI as before. Any other server, uvicorn's h11 protocol, or a
test's in-memory transport get the ASGI path. `tests/integration/test_handoff.py` checks both paths and
watches this module's assumptions about uvicorn's internals. uvicorn and httptools are bounded in
`pyproject.toml` to the releases those tests passed on; the comment there says how to widen them.

What uvicorn no longer does for a handed-off stream, the stream does itself: flow control (its
protocol gets `pause_writing`/`resume_writing`), the chunked framing, and closing at shutdown — uvicorn
stops waiting for the connection (it leaves `server_state.connections`); the hub ends every stream
when the process stops (`web/shutdown.py`, `Hub.close_streams`).
"""

import asyncio
from typing import Any

from starlette.types import Scope, Send

RAW_SEND = "jobpulse.server_send"  # scope key: the server's own `send`, before any middleware wraps it

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
except ImportError:  # uvicorn without httptools: every stream stays on the ASGI path
    HttpToolsProtocol = RequestResponseCycle = None  # type: ignore[assignment,misc]


def remember_server_send(scope: Scope, send: Send) -> None:
    """Keep the server's `send` in the scope, so the stream can find its connection behind middleware."""
    scope[RAW_SEND] = send


def take_over(scope: Scope, protocol: asyncio.BaseProtocol) -> asyncio.Transport | None:
    """The connection's transport, now driving `protocol`; None (and nothing changed) if declined.

    Call it once the response head has been sent (uvicorn has then chosen the chunked body), and return
    from the ASGI app right after: uvicorn finishes the request without touching the connection again.
    """
    cycle: Any = getattr(scope.get(RAW_SEND), "__self__", None)
    if RequestResponseCycle is None or type(cycle) is not RequestResponseCycle:
        return None
    transport = cycle.transport
    owner = transport.get_protocol()
    if (
        type(owner) is not HttpToolsProtocol
        or owner.cycle is not cycle
        or owner.pipeline  # another request is queued behind this one on the connection
        or not cycle.response_started
        or cycle.response_complete
        or cycle.disconnected
        or not cycle.chunked_encoding
        or transport.is_closing()
        or transport.get_extra_info("sslcontext") is not None
    ):
        return None
    write_paused = cycle.flow.write_paused
    del scope[RAW_SEND]  # the cycle's bound `send` in its own scope: a cycle only the collector would free
    # The request cycle ends quietly: with its client "gone", uvicorn neither answers 500 nor closes the
    # connection when the app returns, and its send and receive do nothing from here on.
    cycle.disconnected = True
    owner.connections.discard(owner)  # graceful shutdown stops waiting for it: the hub ends the stream
    owner.parser = None  # type: ignore[assignment]  # breaks the parser <-> protocol cycle, so both are freed at once
    transport.set_protocol(protocol)
    if write_paused:
        protocol.pause_writing()
    if not transport.is_reading():
        transport.resume_reading()  # hear the client close the connection
    return transport
