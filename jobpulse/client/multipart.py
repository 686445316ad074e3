"""The `multipart/form-data` body of `POST /uploads`: one part named `file`, read from disk as it is sent.

Framed here rather than with httpx's `files=`, which reads file objects synchronously even in an
`AsyncClient` and so would stall the event loop for every chunk of a large file. With the framing in hand,
the async client reads the file in a worker thread, and both clients send the same bytes, with a
`Content-Length` so the server can refuse a file that is too large before any of it is sent.
"""

import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio

FIELD = "file"
CHUNK_BYTES = 256 * 1024

# The HTML standard's escaping of names in multipart/form-data, as browsers send them.
_NAME_ESCAPES = str.maketrans({"\n": "%0A", "\r": "%0D", '"': "%22"})


class FileBody:
    """One upload's body: the framing around the file's bytes, and the file read chunk by chunk."""

    def __init__(self, path: str | os.PathLike[str], filename: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"No file to upload at {self.path}")
        self.size = self.path.stat().st_size
        name = filename if filename is not None else self.path.name
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self.boundary = secrets.token_hex(16)
        self.head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{FIELD}"; filename="{name.translate(_NAME_ESCAPES)}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(len(self.head) + self.size + len(self.tail)),
        }

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        with self.path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk
        yield self.tail

    async def achunks(self) -> AsyncIterator[bytes]:
        yield self.head
        async with await anyio.open_file(self.path, "rb") as file:
            while chunk := await file.read(CHUNK_BYTES):
                yield chunk
        yield self.tail
