"""Server-Sent Events wire encoding (WHATWG HTML, "Server-sent events" §9.2).

Kept apart from any transport so the bytes for one event are built once and handed to every subscriber.
"""

import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _single_line(field: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"SSE {field} must be a single line without NUL: {value!r}")
    return value


def encode_event(data: str, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One event. Every line of `data` becomes a `data:` line, so a parser rebuilds it exactly."""
    parts: list[str] = []
    if event_id is not None:
        parts.append(f"id: {_single_line('id', event_id)}\n")
    if event is not None:
        parts.append(f"event: {_single_line('event', event)}\n")
    parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    parts.append("\n")
    return "".join(parts).encode()


def encode_comment(text: str = "") -> bytes:
    """Comment lines: ignored by clients, but they keep proxies and load balancers from timing out.

    No blank line follows them. The spec would not dispatch an event for a comment-only block, but
    several client libraries (httpx-sse among them) do, as an empty `message`, once an id has been seen.
    """
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode()


def encode_retry(milliseconds: int) -> bytes:
    """A `retry:` field line: the client's reconnection delay, applied as soon as the line is read.

    No blank line follows it: a block holding only `retry:` is not an event by the spec, but several
    client libraries (httpx-sse among them) hand it to the application as an event with empty data.
    The next event's lines simply follow it.
    """
    return f"retry: {int(milliseconds)}\n".encode()


def encode_chunk(data: bytes) -> bytes:
    """`data` as one chunk of an HTTP/1.1 chunked body (RFC 9112 §7.1); b"" would end the body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


# The chunked body's last chunk (no trailers).
LAST_CHUNK = b"0\r\n\r\n"
