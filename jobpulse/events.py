"""An event as stored in a job's Redis Stream and announced on its live channel.

Events are numbered 1, 2, 3, … per job. The stream entry id is ``0-N`` for event N, so Redis keeps
them in order and a reader can tell a gap (N+2 after N) from a duplicate (N again) without any clock.
The public event id, sent as SSE ``id:`` and accepted back as ``Last-Event-ID``, is the plain N.
"""

from dataclasses import dataclass
from functools import cached_property

from jobpulse.sse import encode_chunk, encode_event

# Stream entry field names.
TYPE_FIELD = b"type"
DATA_FIELD = b"data"
FINAL_FIELD = b"final"


@dataclass(frozen=True)  # no slots: `sse` is a cached_property
class StoredEvent:
    id: int
    type: str
    data: str  # the JSON object sent as `data:`
    final: bool  # a terminal status event: nothing follows it

    @cached_property
    def sse(self) -> bytes:
        """The event on the wire, encoded once however many subscribers receive it."""
        return encode_event(self.data, event=self.type, event_id=str(self.id))

    @cached_property
    def chunk(self) -> bytes:
        """`sse` as one HTTP/1.1 chunk, for streams the web writes straight to the socket."""
        return encode_chunk(self.sse)


def event_id_from_entry(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


def from_stream_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> StoredEvent:
    return StoredEvent(
        id=event_id_from_entry(entry_id),
        type=fields[TYPE_FIELD].decode(),
        data=fields[DATA_FIELD].decode(),
        final=fields.get(FINAL_FIELD) == b"1",
    )


def from_live_message(payload: bytes) -> StoredEvent:
    """Parse what the append script publishes: ``id \\n type \\n final \\n data``."""
    event_id, event_type, final, data = payload.split(b"\n", 3)
    return StoredEvent(id=int(event_id), type=event_type.decode(), data=data.decode(), final=final == b"1")
