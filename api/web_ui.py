"""A built single-page web UI, served from a folder beside the API.

Hooked in as the router's fallback (``Router.default``), so it only sees requests that no API
route matched: the API keeps priority, and anything under ``/api`` (or not a GET/HEAD) is handed
to the router's own 404. For the rest:
- a regular file inside the folder is sent with its content type;
- a path that names no file (or names a folder: there are no listings) is sent ``index.html``,
  for the UI's history-mode routes;
- a path with ``.``/``..`` segments, a NUL or a backslash, or that leads (through a symlink)
  out of the folder, or to something that is not a regular file, is answered 404.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from pathlib import Path

from starlette.responses import FileResponse
from starlette.types import ASGIApp, Receive, Scope, Send

API_PREFIX = "/api"
INDEX = "index.html"
READ_METHODS = frozenset({"GET", "HEAD"})
CONTENT_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".json": "application/json", ".map": "application/json",
    ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".gif": "image/gif", ".webp": "image/webp", ".ico": "image/x-icon",
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".wasm": "application/wasm", ".txt": "text/plain", ".webmanifest": "application/manifest+json",
}


class WebUiError(ValueError):
    pass


def is_api_path(path: str) -> bool:
    """``/api`` and everything under it: never the web UI's."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def check_web_ui_dir(directory: Path) -> Path:
    """The folder, resolved; refused unless it is a folder holding an ``index.html`` file."""
    root = Path(os.path.realpath(directory.expanduser()))
    if not root.is_dir():
        raise WebUiError(f"web UI folder {directory} does not exist or is not a folder")
    if not (root / INDEX).is_file():
        raise WebUiError(f"web UI folder {directory} has no {INDEX} (build the UI into it first)")
    return root


def content_type(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


class WebUI:
    """The ASGI fallback serving ``directory``; ``not_found`` answers everything else."""

    def __init__(self, directory: Path, not_found: ASGIApp) -> None:
        self.root = str(check_web_ui_dir(directory))
        self.not_found = not_found

    def lookup(self, path: str) -> tuple[str, os.stat_result] | None:
        """The regular file inside the folder to send for ``path``, or None for a 404."""
        segments = [s for s in path.split("/") if s]
        if any(s in (".", "..") or "\x00" in s or "\\" in s for s in segments):
            return None
        found = os.path.realpath(os.path.join(self.root, *segments))
        if found != self.root and not found.startswith(self.root + os.sep):
            return None
        try:
            info = os.stat(found)
        except (OSError, ValueError):
            return self._index()
        if stat.S_ISREG(info.st_mode):
            return found, info
        if stat.S_ISDIR(info.st_mode):
            return self._index()
        return None

    def _index(self) -> tuple[str, os.stat_result] | None:
        index = os.path.join(self.root, INDEX)
        try:
            info = os.stat(index)
        except OSError:
            return None
        return (index, info) if stat.S_ISREG(info.st_mode) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (scope["type"] != "http" or scope.get("method") not in READ_METHODS
                or is_api_path(path)):
            await self.not_found(scope, receive, send)
            return
        found = self.lookup(path)
        if found is None:
            await self.not_found(scope, receive, send)
            return
        file, info = found
        headers = {"x-content-type-options": "nosniff"}
        if os.path.basename(file) == INDEX:
            headers["cache-control"] = "no-cache"
        response = FileResponse(file, stat_result=info, media_type=content_type(file),
                                headers=headers)
        await response(scope, receive, send)
