"""Runs the whole jobpulse system on one machine: Redis (private if none is configured), worker, web.

Used by `scripts/up`, by the test suite (which needs its own Redis on a free port) and by benchmarks.
"""
