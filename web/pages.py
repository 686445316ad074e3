"""The demo upload page at `/` and the static files it loads from `/static/`.

Plain files: no build step and no CDN, so the page works offline. `/static/jobpulse.js`, the browser
client it uses, is jobpulse's own (`jobs_router` serves it).
"""

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from jobpulse import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads only its own files and talks only to its own origin: a filename that slipped past the
# page's escaping still could not load or run anything.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
}


@cache
def _index_template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def pages_router(settings: Settings) -> APIRouter:
    """`GET /`: the upload page."""
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        """The page, told the upload limit so it can refuse a too-large file before sending a byte, and
        whether uploads need an API key (`JOBPULSE_API_KEYS`), so it can ask for one. Never the keys."""
        html = (
            _index_template()
            .replace("__MAX_UPLOAD_BYTES__", str(settings.max_upload_bytes))
            .replace("__AUTH_REQUIRED__", "true" if settings.api_keys else "false")
        )
        return HTMLResponse(html, headers=PAGE_HEADERS)

    return router


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
