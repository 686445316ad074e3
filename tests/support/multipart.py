"""Hand-built multipart bodies, for the hostile ones no HTTP client library would send."""

from dataclasses import dataclass

BOUNDARY = "jobpulse-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass(frozen=True)
class Part:
    name: str | None
    data: bytes
    filename: str | None = None
    content_type: str | None = None
    raw_disposition: bytes | None = None  # overrides name/filename, byte for byte


def multipart(*parts: Part, close: bool = True) -> bytes:
    body = bytearray()
    for part in parts:
        body += f"--{BOUNDARY}\r\n".encode()
        if part.raw_disposition is not None:
            body += b"Content-Disposition: " + part.raw_disposition + b"\r\n"
        else:
            disposition = f'form-data; name="{part.name}"'
            if part.filename is not None:
                disposition += f'; filename="{part.filename}"'
            body += f"Content-Disposition: {disposition}\r\n".encode()
        if part.content_type:
            body += f"Content-Type: {part.content_type}\r\n".encode()
        body += b"\r\n" + part.data + b"\r\n"
    if close:
        body += f"--{BOUNDARY}--\r\n".encode()
    return bytes(body)
