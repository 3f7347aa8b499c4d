"""Consent and disclosure sidecars: ``avatars/<id>.json`` next to a portrait ``avatars/<id>.png``.

Format (every key optional)::

    {"added": "2026-11-25T09:00:00+00:00", "by": "alice (token ops-1)", "consent": true, "note": "...",
     "framing": "full"}

``added`` is an ISO 8601 time, ``by`` who added the portrait (a name or a token *label*, never a secret:
``GET /avatars`` shows it), ``consent`` whether the person shown agreed, ``note`` free text,
``framing`` how this portrait is framed (``full`` or ``head_and_shoulders``; absent: the server's
``avatar.framing``).
A missing, unreadable or malformed sidecar reads as "no record" (``consent`` false) with one log line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from avatar.errors import ConfigError
from avatar.face.framing import parse_framing

log = logging.getLogger("server.avatars")
MAX_SIDECAR_BYTES = 65536
MAX_TEXT_CHARS = 500


@dataclass(frozen=True)
class ConsentRecord:
    added: str | None = None
    """ISO 8601 time the portrait was added (as written in the sidecar, validated)."""
    by: str | None = None
    consent: bool = False
    note: str | None = None
    present: bool = False
    """Whether a usable sidecar was found."""
    framing: str | None = None
    """``full`` or ``head_and_shoulders`` for this portrait; None: the server's ``avatar.framing``."""


NO_RECORD = ConsentRecord()


class SidecarError(ValueError):
    """A sidecar exists but cannot be used (one-line reason)."""


def sidecar_path(portrait: Path) -> Path:
    return portrait.with_suffix(".json")


def parse_sidecar(text: str) -> ConsentRecord:
    """Parse sidecar JSON text; raises ``SidecarError`` naming the bad key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SidecarError(f"not JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise SidecarError("must be a JSON object")
    added = data.get("added")
    if added is not None:
        if not isinstance(added, str):
            raise SidecarError("'added' must be an ISO 8601 time string")
        try:
            datetime.fromisoformat(added.replace("Z", "+00:00"))
        except ValueError:
            raise SidecarError(f"'added' is not an ISO 8601 time: {added[:40]!r}") from None
    consent = data.get("consent", False)
    if not isinstance(consent, bool):
        raise SidecarError("'consent' must be true or false")
    texts = {}
    for key in ("by", "note"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise SidecarError(f"'{key}' must be a string")
        texts[key] = value[:MAX_TEXT_CHARS] if value else None
    framing = data.get("framing")
    if framing is not None:
        try:
            framing = parse_framing(framing, "'framing'").value
        except ConfigError as exc:
            raise SidecarError(str(exc)) from None
    return ConsentRecord(added=added, by=texts["by"], consent=consent, note=texts["note"], present=True,
                         framing=framing)


class SidecarReader:
    """Reads sidecars, cached by modification time; logs a bad sidecar once per change."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[float, ConsentRecord]] = {}

    def read(self, portrait: Path) -> ConsentRecord:
        path = sidecar_path(portrait)
        try:
            stamp = path.stat().st_mtime
        except OSError:
            self._cache.pop(path, None)
            return NO_RECORD
        cached = self._cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_SIDECAR_BYTES + 1)
            if len(raw) > MAX_SIDECAR_BYTES:
                raise SidecarError(f"larger than {MAX_SIDECAR_BYTES} bytes")
            record = parse_sidecar(raw.decode("utf-8"))
        except (SidecarError, UnicodeDecodeError, OSError) as exc:
            log.warning("ignoring sidecar %s: %s", path.name, exc)
            record = NO_RECORD
        self._cache[path] = (stamp, record)
        return record
