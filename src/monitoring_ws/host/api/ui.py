"""``/ui``: the dashboard's static files (docs/dashboard.md).

The files carry no data: the page asks the API for everything with the operator's token
(kept in the tab's sessionStorage), so they are served without one, under the browser
rules like every route. A strict Content-Security-Policy allows only these files' own
scripts and styles and connections back to this origin; nothing is inline, no cookies.
"""

from __future__ import annotations

import re
from importlib import resources

from quart import Quart, Response

from ...web import error

__all__ = ["UI_PREFIX", "add_ui_routes", "is_ui_path"]

UI_PREFIX = "/ui"
_NAME = re.compile(r"[a-z0-9-]+\.(js|css|html)")
_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def _files() -> dict[str, bytes]:
    folder = resources.files("monitoring_ws.host") / "ui"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if _NAME.fullmatch(entry.name) is not None
    }


def add_ui_routes(app: Quart) -> None:
    files = _files()  # a few dozen KB, read once

    def serve(name: str) -> Response:
        body = files.get(name)
        if body is None or _NAME.fullmatch(name) is None:
            return error(404, "not_found", f"the dashboard has no file {name[:100]!r}")
        response = Response(body, content_type=_TYPES[name.rpartition(".")[2]])
        headers = response.headers
        headers["Content-Security-Policy"] = POLICY
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cache-Control"] = "no-cache"  # an upgrade's files are used at once
        return response

    @app.get(UI_PREFIX)
    async def dashboard() -> Response:
        return serve("index.html")

    @app.get(UI_PREFIX + "/<name>")
    async def dashboard_file(name: str) -> Response:
        return serve(name)
