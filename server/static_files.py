"""Safe lookup of static files under one root folder, with content types browsers accept.

Anything that could leave the root (``..`` raw or percent-encoded, backslashes, absolute or drive
paths, NUL bytes, hidden files, symlinks pointing outside) resolves to ``None`` (served as 404).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
}
MAX_STATIC_BYTES = 32 * 1024 * 1024
PAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


class StaticFiles:
    """Maps URL paths to files inside ``root``; ``/`` is ``index.html`` and ``/<page>`` is ``<page>.html``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def resolve(self, url_path: str) -> Path | None:
        """The file a URL path names, or ``None`` when it does not exist or is not allowed."""
        path = url_path.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("/"):
            return None
        try:
            decoded = unquote(path, errors="strict") if "%" in path else path
        except UnicodeDecodeError:
            return None
        if "\\" in decoded or "\x00" in decoded or ":" in decoded or "//" in decoded:
            return None
        parts = decoded.strip("/").split("/") if decoded.strip("/") else []
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            return None
        if not parts:
            return self._inside(["index.html"])
        if len(parts) == 1 and PAGE_NAME.match(parts[0]):  # /kiosk -> kiosk.html
            return self._inside([parts[0] + ".html"]) or self._inside(parts)
        return self._inside(parts)

    def _inside(self, parts: list[str]) -> Path | None:
        try:
            candidate = self.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            return None
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def read(self, url_path: str) -> tuple[bytes, str] | None:
        """``(body, content type)`` for a URL path, or ``None`` (-> 404)."""
        found = self.resolve(url_path)
        if found is None:
            return None
        try:
            if found.stat().st_size > MAX_STATIC_BYTES:
                return None
            return found.read_bytes(), content_type(found)
        except OSError:
            return None
