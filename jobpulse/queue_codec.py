"""How jobs are written on the arq queue: JSON, where arq's default is pickle.

Unpickling runs whatever code the bytes name, so with pickle anyone who can write to Redis can run code
on every worker. With JSON a forged queue entry is at worst a job that fails to decode. Parameters are
JSON already (each task's params model, dumped in JSON mode), so nothing is lost.
"""

import json
from typing import Any


def encode(value: Any) -> bytes:
    # arq writes results and failures through this too: an exception is stored as its repr.
    return json.dumps(value, default=repr, separators=(",", ":")).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)
