"""The event JSON the worker writes without a model is the model's, byte for byte."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jobpulse.models import ProgressEvent, progress_event_json

# Any code point a Python str can hold except lone surrogates, which cannot be encoded as UTF-8 at all.
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]))
COUNTS = st.none() | st.integers(min_value=0, max_value=2**70)


@given(
    job_id=ANY_TEXT,
    ts=st.floats(allow_nan=False) | st.integers(min_value=0, max_value=2**40),
    progress=st.floats(min_value=0, max_value=100) | st.integers(min_value=0, max_value=100),
    message=st.none() | ANY_TEXT,
    current=COUNTS,
    total=COUNTS,
)
@example(job_id="j", ts=1e-05, progress=1e-05, message='é\n"\\\x00\u2028', current=0, total=0)
@example(job_id="j", ts=1.7e9 + 0.1, progress=100, message=None, current=None, total=None)
@example(job_id="j", ts=float("inf"), progress=0.0, message="", current=None, total=3)
def test_progress_event_json_is_the_models_json(
    job_id: str, ts: float, progress: float, message: str | None, current: int | None, total: int | None
) -> None:
    model = ProgressEvent(
        job_id=job_id, ts=ts, progress=progress, message=message, current=current, total=total
    )
    expected = model.model_dump_json(exclude_none=True).encode()
    assert progress_event_json(job_id, ts, progress, message, current, total) == expected


@pytest.mark.parametrize(
    ("progress", "current", "total"),
    [(-0.1, None, None), (100.5, None, None), (float("nan"), None, None), (5, -1, None), (5, None, -1)],
)
def test_progress_event_json_refuses_what_the_model_refuses(
    progress: float, current: int | None, total: int | None
) -> None:
    with pytest.raises(ValueError):
        ProgressEvent(job_id="j", ts=1.0, progress=progress, current=current, total=total)
    with pytest.raises(ValueError):
        progress_event_json("j", 1.0, progress, None, current, total)
