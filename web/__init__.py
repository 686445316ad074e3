"""The jobpulse web app: start it with `uvicorn web.app:app`."""
