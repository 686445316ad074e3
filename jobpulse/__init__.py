"""The contract shared by the web app and the worker.

Everything both sides must agree on lives here and nowhere else: the job and event models, the status
enum with its terminal set, the Redis key names, the atomic event store and the SSE wire encoding. This
package imports neither ``web`` nor ``worker``.
"""
