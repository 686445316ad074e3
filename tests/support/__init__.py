"""Helpers the tests share: SSE readers, child processes, proxies, recorded transports. Not tests."""
