"""What `process_upload` learns about a file, in one pass over it: size, lines, SHA-256, CSV and image facts.

Plain blocking code, run in a thread: the task reads `FileProgress` from the event loop meanwhile to report
progress, and sets `stop` to end the pass early (the job was cancelled).
"""

import csv
import hashlib
import io
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from jobpulse import TaskFailed

CHUNK_BYTES = 1024 * 1024
MAX_COLUMNS_SHOWN = 50
MAX_COLUMN_NAME = 100
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ico"}


class UnreadableUpload(TaskFailed):
    """The file is not what its name or type says (a `.csv` that is not UTF-8 CSV, say)."""


class Stopped(Exception):
    """The pass was stopped from outside."""


@dataclass
class FileProgress:
    """Bytes read so far; written by the reading thread, read by the event loop (a plain int is atomic)."""

    done: int = 0


@dataclass
class Analysis:
    size: int
    sha256: str
    lines: int
    csv: dict[str, Any] | None = None
    image: dict[str, Any] | None = None


def is_csv(filename: str, content_type: str | None) -> bool:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return filename.lower().endswith(".csv") or media_type in ("text/csv", "application/csv")


def is_image(filename: str, content_type: str | None) -> bool:
    return Path(filename.lower()).suffix in _IMAGE_SUFFIXES or (content_type or "").startswith("image/")


class _HashingReader(io.RawIOBase):
    """A raw reader over the file that hashes and counts what passes through it, optionally throttled."""

    def __init__(
        self, raw: io.BufferedReader, progress: FileProgress, stop: threading.Event, bytes_per_s: int
    ) -> None:
        self._raw = raw
        self._progress = progress
        self._stop = stop
        self._bytes_per_s = bytes_per_s
        self._started = time.monotonic()
        self.sha256 = hashlib.sha256()
        self.newlines = 0
        self.last_byte = b""
        self.chunk = min(CHUNK_BYTES, max(4096, bytes_per_s // 20)) if bytes_per_s else CHUNK_BYTES

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._stop.is_set():
            raise Stopped
        view = memoryview(buffer)[: self.chunk]
        n = self._raw.readinto(view)
        if n:
            data = bytes(view[:n])
            self.sha256.update(data)
            self.newlines += data.count(b"\n")
            self.last_byte = data[-1:]
            self._progress.done += n
            self._throttle()
        return n

    def _throttle(self) -> None:
        if self._bytes_per_s:
            ahead = self._progress.done / self._bytes_per_s - (time.monotonic() - self._started)
            if ahead > 0 and self._stop.wait(ahead):
                raise Stopped


def analyse(
    path: Path,
    filename: str,
    content_type: str | None,
    progress: FileProgress,
    stop: threading.Event,
    bytes_per_s: int = 0,
) -> Analysis:
    """One pass over `path`. Raises `UnreadableUpload` for a CSV that cannot be read, `Stopped` if stopped."""
    with path.open("rb") as raw:
        reader = _HashingReader(raw, progress, stop, bytes_per_s)
        csv_facts = _read_csv(reader, filename) if is_csv(filename, content_type) else None
        while reader.readinto(bytearray(reader.chunk)):  # whatever the CSV pass did not need
            pass
    lines = reader.newlines + (1 if reader.last_byte not in (b"", b"\n") else 0)
    image = _image_facts(path) if is_image(filename, content_type) else None
    return Analysis(progress.done, reader.sha256.hexdigest(), lines, csv_facts, image)


def _read_csv(reader: _HashingReader, filename: str) -> dict[str, Any]:
    text = io.TextIOWrapper(
        io.BufferedReader(reader, buffer_size=reader.chunk), encoding="utf-8-sig", newline=""
    )
    rows = csv.reader(text)
    try:
        header = next(rows, [])
        count = sum(1 for _ in rows)
    except UnicodeDecodeError as exc:
        raise UnreadableUpload(f"{filename} is not UTF-8 text ({exc.reason}), so not a CSV file") from None
    except csv.Error as exc:
        problem = f"{filename} is not a readable CSV file (line {rows.line_num}): {exc}"
        raise UnreadableUpload(problem) from None
    text.detach()
    return {
        "columns": [name[:MAX_COLUMN_NAME] for name in header[:MAX_COLUMNS_SHOWN]],
        "column_count": len(header),
        "rows": count,
    }


def _image_facts(path: Path) -> dict[str, Any] | None:
    """Format, size and mode from the image's header (the pixels are never decoded)."""
    try:
        with warnings.catch_warnings():
            # Only the header is read, so a huge image is no decompression bomb here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return {
                    "format": image.format,
                    "width": image.width,
                    "height": image.height,
                    "mode": image.mode,
                }
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
