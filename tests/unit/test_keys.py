"""Every key of a job hashes to one Redis Cluster slot; the table in docs/SCALING.md names every key."""

import inspect
from collections.abc import Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from jobpulse import keys
from jobpulse.ids import new_job_id

JOB_KEYS = (keys.state_key, keys.events_key, keys.live_channel)


@given(st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True))
def test_a_jobs_keys_and_channel_share_one_slot(job_id: str) -> None:
    assert len({key_slot(build(job_id).encode()) for build in JOB_KEYS}) == 1


def test_different_jobs_spread_over_slots() -> None:
    """The tag is the job id itself, not something common to all jobs."""
    slots = {key_slot(keys.state_key(new_job_id()).encode()) for _ in range(50)}
    assert len(slots) > 40


def test_the_scaling_docs_name_every_key() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "SCALING.md").read_text()
    shown: dict[Callable[[str], str], str] = {
        keys.state_key: "`jobpulse:{<job id>}:state`",
        keys.events_key: "`jobpulse:{<job id>}:events`",
        keys.live_channel: "`jobpulse:{<job id>}:live`",
        keys.submission_rate_key: "`jobpulse:rate:submit:<client>`",
    }
    defined = {
        name for name, f in inspect.getmembers(keys, inspect.isfunction) if f.__module__ == keys.__name__
    }
    others = {
        "running_attempts_key",
        "unfinished_jobs_key",
        "reconciler_lease_key",
        "worker_health_check_key",
    }
    assert defined == {f.__name__ for f in shown} | others, "update docs/SCALING.md's table"
    for build, written in shown.items():
        placeholder = "<client>" if build is keys.submission_rate_key else "<job id>"
        assert f"`{build(placeholder)}`" == written
        assert written in text
    assert f"`{keys.running_attempts_key()}`" in text
    assert f"`{keys.unfinished_jobs_key('<queue>')}`" in text
    assert f"`{keys.reconciler_lease_key('<queue>')}`" in text
    assert f"`{keys.worker_health_check_key('<queue>', '<host>')}`" in text


def test_the_slots_the_scaling_docs_give_for_one_job() -> None:
    job_id = "qGifttvEDfUpfZiKzwCCdw"
    assert {key_slot(build(job_id).encode()) for build in JOB_KEYS} == {4525}
    arq_keys = [f"arq:{kind}:{job_id}" for kind in ("job", "in-progress", "retry", "result")]
    assert [key_slot(key.encode()) for key in arq_keys] == [7145, 8417, 11413, 77]
    text = (Path(__file__).resolve().parents[2] / "docs" / "SCALING.md").read_text()
    assert f"({job_id}) the first three are all slot 4525" in text.replace("\n", " ").replace("`", "")
    assert "in slots 7145, 8417, 11413 and 77" in text.replace("\n", " ")
