"""`jobpulse.uploads`: server-chosen paths, cleaned display names, and the sweep of old files."""

import os
import time
from pathlib import Path

import pytest

from jobpulse.ids import new_job_id
from jobpulse.uploads import ABANDONED_AFTER_S, UploadStorage, display_name


def test_paths_are_the_job_id_and_nothing_else(tmp_path: Path) -> None:
    storage = UploadStorage(tmp_path)
    job_id = new_job_id()
    assert storage.path(job_id) == tmp_path / job_id
    assert storage.partial_path(job_id) == tmp_path / f"{job_id}.part"
    for bad in ("../../etc/passwd", "", "a" * 22 + "/", "."):
        with pytest.raises(ValueError, match="not a job id"):
            storage.path(bad)


def _touch(path: Path, age_s: float) -> None:
    path.write_bytes(b"x")
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_sweep_removes_old_uploads_and_abandoned_partials_only(tmp_path: Path) -> None:
    storage = UploadStorage(tmp_path)
    old, fresh, stale_part, live_part = (new_job_id() for _ in range(4))
    _touch(storage.path(old), 200)
    _touch(storage.path(fresh), 10)
    _touch(storage.partial_path(stale_part), ABANDONED_AFTER_S + 10)
    _touch(storage.partial_path(live_part), 200)  # an upload still arriving: younger than an hour
    _touch(tmp_path / "someone-elses-file", 10_000)
    (tmp_path / ("d" * 22)).mkdir()
    os.utime(tmp_path / ("d" * 22), (0, 0))

    removed = storage.sweep(retention_s=100)

    assert sorted(removed) == sorted([old, f"{stale_part}.part"])
    assert sorted(os.listdir(tmp_path)) == sorted(
        [fresh, f"{live_part}.part", "someone-elses-file", "d" * 22]
    )


def test_sweep_of_a_missing_directory_removes_nothing(tmp_path: Path) -> None:
    assert UploadStorage(tmp_path / "absent").sweep(retention_s=1) == []


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\ada\\report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("dir/", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("  spaced.txt  ", "spaced.txt"),
        ("tab\there\nnew.txt", "tabherenew.txt"),
        ("\u200bzero-width.txt", "zero-width.txt"),
        ("y" * 300, "y" * 254 + "…"),
        ("z" * 300 + ".averyveryverylongsuffix", "z" * 254 + "…"),
    ],
)
def test_display_name(sent: str | None, shown: str) -> None:
    assert display_name(sent) == shown
    assert len(display_name(sent)) <= 255
