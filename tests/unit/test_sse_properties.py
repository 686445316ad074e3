"""Property tests: whatever a task puts in a message, a spec-following SSE parser gets back exactly one event.

The parser is httpx-sse's (it splits lines on CR, LF and CRLF only, as the WHATWG spec says, unlike
`str.splitlines`); the bytes are fed to it in arbitrary chunks, as a network would deliver them.
"""

import codecs
import itertools
import json
import re

from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from httpx_sse._models import ServerSentEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from jobpulse.events import StoredEvent
from jobpulse.models import ProgressEvent, StatusEvent
from jobpulse.sse import encode_event
from jobpulse.status import JobStatus

# Any code point a Python str can hold except lone surrogates, which cannot be encoded as UTF-8 at all.
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]))


def parse_in_chunks(raw: bytes, cuts: list[int]) -> list[ServerSentEvent]:
    """Feed `raw` to the parser split at `cuts` (byte offsets, possibly inside a UTF-8 sequence)."""
    text = codecs.getincrementaldecoder("utf-8")()
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    bounds = [0, *sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]
    for start, end in itertools.pairwise(bounds):
        chunk = text.decode(raw[start:end], final=end == len(raw))
        for line in lines.decode(chunk) if chunk else []:
            if (event := decoder.decode(line)) is not None:
                events.append(event)
    for line in lines.flush():
        if (event := decoder.decode(line)) is not None:
            events.append(event)
    return events


@settings(max_examples=300, database=None)
@given(data=ANY_TEXT, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_any_data_is_one_event_with_its_lines(data: str, cuts: list[int]) -> None:
    """Raw `data:` text: one event; line breaks come back as LF, which is all SSE can carry."""
    (event,) = parse_in_chunks(encode_event(data, event="progress", event_id="7"), cuts)
    assert (event.event, event.id) == ("progress", "7")
    assert event.data == re.sub(r"\r\n|\r", "\n", data)


@settings(max_examples=300, database=None)
@given(message=ANY_TEXT, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_any_progress_message_round_trips_exactly(message: str, cuts: list[int]) -> None:
    """A worker's message, as the store encodes it (JSON in one `data:` line): back byte for byte."""
    data = ProgressEvent(job_id="j", ts=1.5, progress=50, message=message).model_dump_json(exclude_none=True)
    stored = StoredEvent(id=42, type="progress", data=data, final=False)
    (event,) = parse_in_chunks(stored.sse, cuts)
    assert event.id == "42" and event.event == "progress"
    assert json.loads(event.data)["message"] == message


@settings(max_examples=200, database=None)
@given(
    error=ANY_TEXT,
    result=st.recursive(
        st.none() | st.booleans() | st.integers() | ANY_TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
        max_leaves=10,
    ),
)
def test_any_status_error_and_result_round_trip_exactly(error: str, result: JsonValue) -> None:
    status = StatusEvent(job_id="j", ts=1.0, status=JobStatus.FAILED, attempt=1, error=error, result=result)
    stored = StoredEvent(id=3, type="status", data=status.model_dump_json(exclude_none=True), final=True)
    (event,) = parse_in_chunks(stored.sse, [])
    parsed = json.loads(event.data)
    assert parsed["error"] == error
    assert parsed.get("result") == result
