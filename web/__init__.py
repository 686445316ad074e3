"""The reference service's web side: `uvicorn web.app:app` (see web/app.py)."""
