"""Avatar registry: the default portrait plus ``*.png|*.jpg|*.jpeg`` in the avatar folder.

An avatar id is a file stem matching ``^[A-Za-z0-9_-]{1,64}$``; ids are looked up in the registry,
never joined into paths. Each portrait is prepared once (``engine.prepare`` in a worker thread) and
cached; concurrent requests for the same avatar share one preparation.

Consent and disclosure: an optional sidecar ``<id>.json`` next to each portrait (``server/consent.py``)
records when and by whom it was added; ``GET /avatars`` shows ``added`` and ``by`` (``null`` without a
sidecar). With ``require_consent`` folder portraits whose sidecar lacks ``"consent": true`` are skipped
(one log line each); the configured default portrait is always offered.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from avatar.engine import Engine, PreparedAvatar
from avatar.errors import AvatarError, PortraitError
from server.consent import NO_RECORD, ConsentRecord, SidecarReader
from server.signalling import AVATAR_ID, SignallingError

log = logging.getLogger("server.avatars")
PORTRAIT_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class AvatarEntry:
    id: str
    name: str
    path: Path
    default: bool = False
    record: ConsentRecord = NO_RECORD

    def public(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "default": self.default,
                "added": self.record.added, "by": self.record.by}


def display_name(stem: str) -> str:
    return " ".join(stem.replace("_", " ").replace("-", " ").split()).title() or stem


class AvatarRegistry:
    """Lists avatars and hands out prepared ones (``await get(id)``); ``None`` means the default."""

    def __init__(
        self,
        engine: Engine,
        default_portrait: Path,
        avatar_dir: Path | None = None,
        require_consent: bool = False,
    ) -> None:
        self.engine = engine
        self.default_portrait = Path(default_portrait)
        self.avatar_dir = Path(avatar_dir) if avatar_dir is not None else None
        stem = self.default_portrait.stem
        self.default_id = stem if AVATAR_ID.match(stem) else "default"
        self._cache: dict[str, tuple[float, asyncio.Task[PreparedAvatar]]] = {}
        self._skipped: set[str] = set()
        self.require_consent = require_consent
        self._sidecars = SidecarReader()

    def entries(self) -> list[AvatarEntry]:
        """The default avatar first, then the folder's portraits sorted by id (rescanned on each call)."""
        default_record = self._sidecars.read(self.default_portrait)
        found = [AvatarEntry(self.default_id, display_name(self.default_id), self.default_portrait, True,
                             default_record)]
        seen = {self.default_id}
        for path in self._scan_dir():
            if path.stem in seen:
                continue
            seen.add(path.stem)
            record = self._sidecars.read(path)
            if self.require_consent and not record.consent:
                self._skip_once(path.name, "skipping portrait %s: no consent recorded "
                                "(avatar.require_consent is on; add \"consent\": true to its sidecar)")
                continue
            self._skipped.discard(path.name)
            found.append(AvatarEntry(path.stem, display_name(path.stem), path, record=record))
        return found

    def _skip_once(self, name: str, message: str) -> None:
        if name not in self._skipped:
            self._skipped.add(name)
            log.warning(message, name)

    def public_list(self) -> list[dict[str, object]]:
        return [entry.public() for entry in self.entries()]

    def find(self, avatar_id: str | None) -> AvatarEntry:
        """The entry for ``avatar_id`` (``None`` -> default); unknown ids raise ``SignallingError``."""
        if avatar_id is None:
            avatar_id = self.default_id
        if not AVATAR_ID.match(avatar_id):
            raise SignallingError("invalid avatar id (use 1-64 letters, digits, '_' or '-')")
        for entry in self.entries():
            if entry.id == avatar_id:
                return entry
        raise SignallingError(f"unknown avatar {avatar_id!r}; send list_avatars to see the choices")

    async def get(self, avatar_id: str | None = None) -> PreparedAvatar:
        """Prepared avatar (cached; re-prepared when the portrait file changed on disk)."""
        entry = self.find(avatar_id)
        try:
            stamp = entry.path.stat().st_mtime
        except OSError:
            raise PortraitError(f"avatar portrait not found: {entry.path}") from None
        cached = self._cache.get(entry.id)
        if cached is None or cached[0] != stamp or _failed(cached[1]):
            task = asyncio.ensure_future(self._prepare(entry))
            self._cache[entry.id] = (stamp, task)
            cached = self._cache[entry.id]
        return await asyncio.shield(cached[1])

    async def prepare_default(self) -> PreparedAvatar:
        return await self.get(None)

    async def _prepare(self, entry: AvatarEntry) -> PreparedAvatar:
        log.info("preparing avatar %s from %s", entry.id, entry.path)
        try:
            prepared = await asyncio.to_thread(self.engine.prepare, entry.path, entry.id)
        except AvatarError:
            raise
        except Exception as exc:  # an engine bug must not reach clients (or the console) as a traceback
            log.error("engine.prepare failed for avatar %s: %s: %s", entry.id, exc.__class__.__name__, exc)
            log.debug("engine.prepare traceback", exc_info=True)
            raise PortraitError(f"cannot prepare avatar {entry.id!r}: {exc.__class__.__name__}") from None
        for warning in prepared.warnings:
            log.warning("avatar %s: %s", entry.id, warning)
        return prepared

    def _scan_dir(self) -> list[Path]:
        folder = self.avatar_dir
        if folder is None or not folder.is_dir():
            return []
        try:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PORTRAIT_SUFFIXES)
        except OSError:
            return []
        usable = []
        for path in files:
            if not AVATAR_ID.match(path.stem):
                self._skip_once(path.name, "skipping portrait %s: its name is not a valid avatar id")
                continue
            if path.is_file():
                usable.append(path)
        return usable


def _failed(task: asyncio.Task) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)
