"""The SSE encoder, checked against a spec-following third-party parser (httpx-sse)."""

import h11
import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from jobpulse.sse import LAST_CHUNK, encode_chunk, encode_comment, encode_event, encode_retry


def parse(raw: bytes) -> list[tuple[str, str, str, int | None]]:
    lines = SSELineDecoder().decode(raw.decode())
    decoder = SSEDecoder()
    events = []
    for line in lines:
        sse = decoder.decode(line)
        if sse is not None:
            events.append((sse.event, sse.data, sse.id, sse.retry))
    return events


@pytest.mark.parametrize(
    "data",
    [
        '{"a":1}',
        "",
        "two\nlines",
        "cr\rcr",
        "crlf\r\nend",
        "trailing\n",
        "\n\n",
        "ünïcødé ✓ \u2028",
        "nul\0inside",
    ],
)
def test_any_data_round_trips_as_one_event(data: str) -> None:
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert parse(encode_event(data, event="progress", event_id="7")) == [("progress", expected, "7", None)]


def test_comments_are_invisible_and_retry_joins_the_next_event() -> None:
    raw = encode_comment("connected") + encode_retry(1500) + encode_event("x", event="status", event_id="1")
    raw += encode_comment("keep-alive\nsecond line") + encode_comment("keep-alive")
    raw += encode_event("y", event="status", event_id="2")
    assert parse(raw) == [("status", "x", "1", 1500), ("status", "y", "2", None)]


@pytest.mark.parametrize(
    ("field", "value"), [("event", "a\nb"), ("event_id", "1\r2"), ("event_id", "1\x002")]
)
def test_single_line_fields_reject_line_breaks(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="single line"):
        encode_event("x", **{field: value})


@pytest.mark.parametrize("size", [1, 15, 16, 255, 4096, 70_000])
def test_an_http_chunk_is_framed_as_h11_reads_it(size: int) -> None:
    """The chunks detached streams write by hand, decoded by a third-party HTTP/1.1 parser (h11)."""
    data = bytes(i % 251 for i in range(size))
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    connection.receive_data(head + encode_chunk(data) + encode_chunk(b"more") + LAST_CHUNK)
    received = []
    while not isinstance(event := connection.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Data):
            received.append(bytes(event.data))
    assert b"".join(received) == data + b"more"
