"""Streams a `multipart/form-data` upload to disk as it arrives, never holding the file in memory.

Starlette's `request.form()` would spool the whole file to a temporary file before we could look at it,
and check no size limit on the way; this writes the one `file` part straight to its final directory and
stops at the limit. Parsing is python-multipart's (Starlette's own parser underneath).
"""

import codecs
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from jobpulse.uploads import UploadNotStored, display_name
from jobpulse.web.errors import ApiError

T = TypeVar("T")

FIELD = "file"
_WRITE_BATCH = 1024 * 1024  # bytes gathered before one write in a worker thread
# Room for the multipart envelope around the file when judging a declared Content-Length.
_ENVELOPE_ALLOWANCE = 64 * 1024
# A refused upload's unread body is read and dropped when at most this much of it is left (and arrives
# within the time below): a socket closed with unread bytes answers with a reset, and a client still
# sending its body (curl, httpx, most libraries write it all before reading) then never sees the 413.
# Past it the connection is cut as before, rather than taking in a large upload only to drop it.
_DRAIN_BYTES = 1024 * 1024
_DRAIN_S = 2.0


@dataclass(frozen=True)
class ReceivedFile:
    filename: str
    content_type: str | None
    size: int


def _unprocessable(msg: str, loc: str = FIELD, type_: str = "upload") -> ApiError:
    return ApiError(422, [{"loc": ["body", loc], "msg": msg, "type": type_}])


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"The upload exceeds {limit} bytes (JOBPULSE_MAX_UPLOAD_BYTES).", {"Connection": "close"}
    )


def _decode(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def multipart_boundary(content_type: str) -> tuple[bytes, str]:
    """The boundary and charset of a `multipart/form-data` Content-Type; 415 or 400 otherwise."""
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "missing"
        raise ApiError(415, f"Content-Type must be multipart/form-data, not {shown!r}.")
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 70:
        raise ApiError(400, "The multipart/form-data Content-Type has no valid boundary.")
    charset = options.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "utf-8"
    return boundary, charset


class _FilePartWriter:
    """python-multipart callbacks that accept exactly one file part named `file` and buffer its bytes.

    The callbacks run synchronously inside `parser.write()`; the buffered bytes are written to disk by the
    async caller between chunks.
    """

    def __init__(self, charset: str, limit: int) -> None:
        self.charset = charset
        self.limit = limit
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.in_file_part = False
        self.file: ReceivedFile | None = None
        self.pending = bytearray()
        self.size = 0
        self.filename = ""
        self.content_type: str | None = None
        self.finished = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self.header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_name).lower()] = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self.headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise ApiError(400, "A multipart part has no Content-Disposition: form-data with a name.")
        name = _decode(options[b"name"], self.charset)
        if name != FIELD:
            raise _unprocessable(f"Unexpected field {name[:100]!r}; send only the file, as {FIELD!r}.", name)
        if self.file is not None or self.in_file_part:
            raise _unprocessable(f"Send one file per upload; {FIELD!r} came twice.")
        raw_filename = options.get(b"filename")
        if not raw_filename:
            raise _unprocessable(f"{FIELD!r} must be a file, sent with a filename.")
        self.filename = display_name(_decode(raw_filename, self.charset))
        content_type = self.headers.get(b"content-type")
        self.content_type = _decode(content_type, "latin-1").strip()[:255] or None if content_type else None
        self.in_file_part = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file_part:
            return
        self.size += end - start
        if self.size > self.limit:
            raise too_large(self.limit)
        self.pending += data[start:end]

    def on_part_end(self) -> None:
        if self.in_file_part:
            self.in_file_part = False
            self.file = ReceivedFile(self.filename, self.content_type, self.size)


async def receive_upload(
    chunks: AsyncIterator[bytes], content_type: str, declared_length: str | None, limit: int, dest: Path
) -> ReceivedFile:
    """Parse the request body from `chunks`, writing the file part to `dest`.

    On any failure (bad input, over the limit, the client gone) `dest` is removed before the error
    propagates: a refused upload leaves nothing behind.
    """
    boundary, charset = multipart_boundary(content_type)
    declared = int(declared_length) if declared_length and declared_length.isdigit() else None
    if declared is not None and declared > limit + _ENVELOPE_ALLOWANCE:
        await _drain(chunks, declared)
        raise too_large(limit)
    writer = _FilePartWriter(charset, limit)
    parser = MultipartParser(boundary, writer.callbacks())  # type: ignore[arg-type]
    out: IO[bytes] | None = None
    try:
        out = await _storing(_create_exclusive, dest)
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise ApiError(400, f"The multipart body is malformed: {exc}") from None
            except ApiError as exc:
                if exc.status_code == 413:
                    await _drain(chunks, None if declared is None else declared - received)
                raise
            if len(writer.pending) >= _WRITE_BATCH:
                await _storing(_flush, writer, out)
        try:
            parser.finalize()
        except FormParserError as exc:
            raise ApiError(400, f"The multipart body is malformed: {exc}") from None
        if writer.file is None:
            raise _unprocessable(f"The body has no complete {FIELD!r} part.", type_="missing")
        await _storing(_flush, writer, out)
        await _storing(_close_durably, out)
        out = None
        return writer.file
    except BaseException:
        with anyio.CancelScope(shield=True):
            if out is not None:
                await anyio.to_thread.run_sync(out.close)
            with contextlib.suppress(OSError):  # never there, or the directory itself is the problem
                await anyio.to_thread.run_sync(os.unlink, dest)
        raise


async def _drain(chunks: AsyncIterator[bytes], left: int | None) -> None:
    """Read and drop the rest of a refused body if `left` (None: not known) is small: see `_DRAIN_BYTES`."""
    if left is not None and left > _DRAIN_BYTES:
        return
    dropped = 0
    with anyio.move_on_after(_DRAIN_S), contextlib.suppress(ClientDisconnect):
        async for chunk in chunks:
            dropped += len(chunk)
            if dropped > _DRAIN_BYTES:
                return


async def _storing(operation: Callable[..., T], *args: Any) -> T:
    """Run a file operation in a worker thread; the file system failing is `UploadNotStored`."""
    try:
        return await anyio.to_thread.run_sync(operation, *args)
    except OSError as exc:
        raise UploadNotStored(f"{exc.strerror or exc}") from exc


def _create_exclusive(path: Path) -> IO[bytes]:
    return path.open("xb")


def _flush(writer: _FilePartWriter, out: IO[bytes]) -> None:
    if writer.pending:
        data, writer.pending = bytes(writer.pending), bytearray()
        out.write(data)


def _close_durably(out: IO[bytes]) -> None:
    """Flush to the OS before the job that reads it is queued; the worker may be another process."""
    out.flush()
    out.close()
