"""SSE fan-out benchmark: jobpulse against the naive design and the server's ceiling, in one run.

    .venv/bin/python -m benchmarks.fanout --scenario all
    .venv/bin/python -m benchmarks.fanout --smoke      # tiny sizes; exit 1 unless nothing is lost

See `__main__.py` for the scenarios and docs/PERFORMANCE.md for measured figures.
"""
