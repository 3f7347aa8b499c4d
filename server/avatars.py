"""Avatar registry: the default portrait plus ``*.png|*.jpg|*.jpeg`` in the avatar folder.

An avatar id is a file stem matching ``^[A-Za-z0-9_-]{1,64}$``; ids are looked up in the registry,
never joined into paths. The list is built once and rebuilt only when the folder changed (its
modification time; ``GET /avatars`` and offers do not rescan it), and at most every ``RESCAN_AFTER_S`` to
pick up sidecars edited in place. Each portrait is prepared once (``engine.prepare`` in a worker thread) and
cached; concurrent requests for the same avatar share one preparation.

Consent and disclosure: an optional sidecar ``<id>.json`` next to each portrait (``server/consent.py``)
records when and by whom it was added; ``GET /avatars`` shows ``added`` and ``by`` (``null`` without a
sidecar). With ``require_consent`` folder portraits whose sidecar lacks ``"consent": true`` are skipped
(one log line each); the configured default portrait is always offered.

Framing: each portrait is prepared with the server's ``avatar.framing`` (``head_and_shoulders`` by default:
a square crop around the face, computed once at preparation) unless its sidecar names a ``framing``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from avatar.engine import Engine, PreparedAvatar
from avatar.errors import AvatarError, PortraitError
from avatar.face.framing import Framing, parse_framing
from server.consent import NO_RECORD, ConsentRecord, SidecarReader
from server.signalling import AVATAR_ID, SignallingError

log = logging.getLogger("server.avatars")
PORTRAIT_SUFFIXES = (".png", ".jpg", ".jpeg")
RESCAN_AFTER_S = 5.0
"""The cached list is rebuilt after this long even if the folder's mtime did not change (a sidecar
edited in place changes only its own mtime)."""
RACY_S = 2.0
"""A folder modified less than this long before a scan may change again within the same mtime tick:
such a scan is not trusted and the next call scans again (git's "racy" rule)."""


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
        framing: Framing | str = Framing.FULL,
    ) -> None:
        self.engine = engine
        self.framing = parse_framing(framing)
        """How portraits are framed unless their sidecar says otherwise (``avatar.framing``)."""
        self.default_portrait = Path(default_portrait)
        self.avatar_dir = Path(avatar_dir) if avatar_dir is not None else None
        stem = self.default_portrait.stem
        self.default_id = stem if AVATAR_ID.match(stem) else "default"
        self._cache: dict[tuple[str, Framing, int], tuple[float, asyncio.Task[PreparedAvatar]]] = {}
        self._skipped: set[str] = set()
        self.require_consent = require_consent
        self._sidecars = SidecarReader()
        self._listed: tuple[int | None, float, list[AvatarEntry]] | None = None
        """(folder mtime in ns, monotonic time of the scan, entries) of the last trusted scan."""
        self.scans = 0
        """How many times the folder was listed (tests check that requests do not rescan)."""

    def entries(self) -> list[AvatarEntry]:
        """The default avatar first, then the folder's portraits sorted by id; cached until the folder's
        mtime changes (or ``RESCAN_AFTER_S`` passed)."""
        stamp = self._folder_stamp()
        now = time.monotonic()
        listed = self._listed
        if listed is not None and listed[0] == stamp and now - listed[1] < RESCAN_AFTER_S:
            return list(listed[2])
        found = self._scan_entries()
        racy = stamp is not None and time.time() - stamp / 1e9 < RACY_S
        self._listed = None if racy else (stamp, now, found)
        return list(found)

    def _folder_stamp(self) -> int | None:
        try:
            return self.avatar_dir.stat().st_mtime_ns if self.avatar_dir is not None else None
        except OSError:
            return None

    def _scan_entries(self) -> list[AvatarEntry]:
        self.scans += 1
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

    async def get(self, avatar_id: str | None = None, framing: Framing | None = None,
                  size: int | None = None) -> PreparedAvatar:
        """Prepared avatar (cached per framing and size; re-prepared when the portrait file changed on
        disk). ``framing`` None: the avatar's own (its sidecar's, else the server's); ``size`` None: the
        engine's (a size the engine does not render raises a one-line ``ConfigError``)."""
        entry = self.find(avatar_id)
        framing = self.framing_of(entry) if framing is None else Framing(framing)
        size = self.engine.output_size(size)
        try:
            stamp = entry.path.stat().st_mtime
        except OSError:
            raise PortraitError(f"avatar portrait not found: {entry.path}") from None
        key = (entry.id, framing, size)
        cached = self._cache.get(key)
        if cached is None or cached[0] != stamp or _failed(cached[1]):
            task = asyncio.ensure_future(self._prepare(entry, framing, size))
            self._cache[key] = (stamp, task)
            cached = self._cache[key]
        return await asyncio.shield(cached[1])

    def framing_of(self, entry: AvatarEntry) -> Framing:
        """The sidecar's ``framing`` if it has one, else the server's."""
        return Framing(entry.record.framing) if entry.record.framing else self.framing

    async def prepare_default(self) -> PreparedAvatar:
        return await self.get(None)

    async def _prepare(self, entry: AvatarEntry, framing: Framing, size: int) -> PreparedAvatar:
        log.info("preparing avatar %s from %s framing=%s size=%d", entry.id, entry.path, framing, size)
        try:
            prepared = await asyncio.to_thread(self.engine.prepare, entry.path, entry.id, framing, size)
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
