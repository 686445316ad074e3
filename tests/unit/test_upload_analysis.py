"""The one pass `process_upload` makes over a file, on its own: counts, hashing, CSV facts, throttle, stop."""

import hashlib
import threading
import time
from pathlib import Path

import pytest

from worker.tasks.upload_analysis import FileProgress, Stopped, UnreadableUpload, analyse


def run(path: Path, name: str = "f.bin", content_type: str | None = None, **kw: int) -> dict[str, object]:
    done = FileProgress()
    analysis = analyse(path, name, content_type, done, threading.Event(), **kw)
    assert done.done == analysis.size
    return vars(analysis)


def test_counts_and_hash_across_chunk_boundaries(tmp_path: Path) -> None:
    data = (b"line\n" * 500_000) + b"tail"  # ~2.5 MB: several 1 MiB chunks
    (tmp_path / "f.bin").write_bytes(data)
    facts = run(tmp_path / "f.bin")
    assert facts["size"] == len(data)
    assert facts["sha256"] == hashlib.sha256(data).hexdigest()
    assert facts["lines"] == 500_001
    assert facts["csv"] is None and facts["image"] is None


def test_a_csv_is_hashed_whole_even_though_the_csv_reader_reads_it(tmp_path: Path) -> None:
    data = b"a,b\n" + b"1,2\n" * 400_000
    (tmp_path / "t.csv").write_bytes(data)
    facts = run(tmp_path / "t.csv", "t.csv")
    assert facts["sha256"] == hashlib.sha256(data).hexdigest()
    assert facts["csv"] == {"columns": ["a", "b"], "column_count": 2, "rows": 400_000}


def test_csv_is_recognised_by_content_type_too(tmp_path: Path) -> None:
    (tmp_path / "upload").write_bytes(b"x\n1\n")
    assert run(tmp_path / "upload", "upload", "text/csv; charset=utf-8")["csv"] == {
        "columns": ["x"],
        "column_count": 1,
        "rows": 1,
    }


def test_csv_with_a_field_too_large_for_the_reader_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "huge.csv").write_bytes(b'a\n"' + b"x" * 200_000 + b'"\n')
    with pytest.raises(
        UnreadableUpload, match=r"huge.csv is not a readable CSV file \(line 2\): field larger"
    ):
        run(tmp_path / "huge.csv", "huge.csv")


def test_throttle_holds_the_reading_to_the_rate(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 300_000)
    started = time.monotonic()
    run(tmp_path / "f.bin", bytes_per_s=1_000_000)
    assert time.monotonic() - started >= 0.25


def test_stop_ends_the_pass(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 1_000_000)
    stop = threading.Event()
    done = FileProgress()
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):
        analyse(tmp_path / "f.bin", "f.bin", None, done, stop, bytes_per_s=100_000)
    assert 0 < done.done < 1_000_000
