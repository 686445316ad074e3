"""Where uploaded files live: one directory that the web writes into and the worker reads from.

A file's name on disk is its job's id, chosen by the server. The name the client sent is kept only for
display, cleaned of path parts and control characters, so no filename can reach the file system.
"""

import contextlib
import os
import time
import unicodedata
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from jobpulse.ids import is_job_id

PARTIAL_SUFFIX = ".part"
DISPLAY_NAME_MAX = 255
# A partial upload nobody has written to for this long was abandoned (its web process died mid-upload).
ABANDONED_AFTER_S = 3600


class UploadParams(BaseModel):
    """Base of an upload task's params: `POST /uploads` (`jobpulse.web.uploads_router`) fills them in.

    Subclass it for the task that processes uploaded files; the file itself is
    `UploadStorage(settings.upload_dir).path(ctx["job_id"])`. `POST /jobs` refuses such a task: only an
    upload starts it.
    """

    model_config = ConfigDict(extra="forbid")

    started_by: ClassVar[str | None] = "POST /uploads"

    filename: str = Field(max_length=DISPLAY_NAME_MAX, description="The client's name for the file.")
    content_type: str | None = Field(default=None, max_length=255, description="As the client sent it.")
    size: int = Field(ge=0, description="Bytes received.")


class UploadNotStored(Exception):
    """The upload directory refused a file (full, gone, read-only): the server's fault, not the client's."""


class UploadStorage:
    """Paths of uploads in `directory`, and the sweep that removes old ones."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str) -> Path:
        """The complete upload of job `job_id`."""
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.directory / job_id

    def partial_path(self, job_id: str) -> Path:
        """Where an upload is written while it arrives; renamed to `path()` once complete."""
        return self.path(job_id).with_name(job_id + PARTIAL_SUFFIX)

    def sweep(self, retention_s: float, now: float | None = None) -> list[str]:
        """Remove uploads older than `retention_s` and abandoned partial ones; returns the names removed.

        Age is the file's modification time, i.e. when its last byte arrived.
        """
        now = time.time() if now is None else now
        removed: list[str] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                partial = name.endswith(PARTIAL_SUFFIX)
                job_id = name.removesuffix(PARTIAL_SUFFIX)
                if not is_job_id(job_id) or not entry.is_file(follow_symlinks=False):
                    continue  # not ours: leave it alone
                max_age = ABANDONED_AFTER_S if partial else retention_s
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                        os.unlink(entry.path)
                        removed.append(name)
                except FileNotFoundError:
                    pass  # removed meanwhile by another sweeper
        return removed


def display_name(sent: str | None) -> str:
    """The client's filename made safe to show: last path part, no control characters, bounded length."""
    name = (sent or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C")).strip()
    if name in ("", ".", ".."):
        return "upload"
    if len(name) > DISPLAY_NAME_MAX:
        _, dot, suffix = name.rpartition(".")
        keep = dot + suffix if dot and len(suffix) <= 16 else ""
        name = name[: DISPLAY_NAME_MAX - len(keep) - 1] + "…" + keep
    return name
