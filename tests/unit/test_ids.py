"""Job ids: unguessable, URL-safe, and safe to pass as a command-line argument."""

from jobpulse.ids import is_job_id, new_job_id


def test_ids_never_start_with_a_dash_so_the_cli_never_reads_one_as_an_option() -> None:
    ids = [new_job_id() for _ in range(10_000)]  # about 156 would start with "-" if drawn freely
    assert not [job_id for job_id in ids if job_id.startswith("-")]
    assert all(is_job_id(job_id) for job_id in ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_before_still_read_as_ids() -> None:
    assert is_job_id("-" + "a" * 21)
