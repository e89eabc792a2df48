"""The dashboard: a page at `/` that shows what Tandem knows (devices, queue, tasks, live
curves and logs, limits, named models), from static files in this package.

The files are plain HTML, CSS and JavaScript modules under `static/`: no build step, no
CDN, nothing fetched from outside, so the page works on an offline GPU box. The page is
a client of the public REST API like any other (it calls `/api/...` with the viewer's
bearer token); the gateway only hands out the files, which hold no state.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
# The page's own files, apart from the APIs (`/api/...`) and the docs' (`/docs-assets`).
ASSETS = "/dashboard"

# Only Tandem's own files run on the page, and no other site may frame it: the page
# handles a bearer token, so injected scripts and click-jacking are what it must refuse.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install(app: FastAPI) -> None:
    """Serves the dashboard at `/` and its assets under `/dashboard/`."""
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="dashboard")

    async def index() -> FileResponse:
        # Revalidated on every visit, so an upgraded server's page is the one shown.
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
