"""Visitors' own portraits, uploaded over ``/ws`` (docs/protocol.md, Uploading a portrait).

Flow per socket: ``{"type": "upload", "name", "bytes", "mime", "consent"}`` -> ``upload_ready``; then the
file as binary frames of at most ``CHUNK_BYTES`` -> ``upload_progress`` per frame and, after the last
one, ``portrait`` (the avatar id to offer and a preview of the framing that will stream) or an error.

The bytes are checked (server/image_checks.py: type, size, pixel count, metadata, polyglots, animation)
before anything is decoded; decoding, face finding and ``engine.prepare`` run in a worker thread, one
upload at a time. Only the prepared avatar is kept, in memory, under an unguessable id that works for
the uploading client's address alone; nothing is written to disk. It is never listed by ``/avatars``
and is dropped ``upload_idle_s`` after its last use (sessions already streaming it keep it).
Limits: ``uploads_per_client`` per ``UPLOAD_WINDOW_S`` per client address, ``MAX_RECEIVING`` files
being received at once server-wide (for at most ``RECEIVE_TIMEOUT_S`` each), ``MAX_STORED_PER_CLIENT``
and ``MAX_STORED`` portraits kept.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np

from avatar.engine import Engine, PreparedAvatar
from avatar.errors import AvatarError
from avatar.face.framing import Framing
from avatar.face.portrait import MIN_FACE_PX, detect_faces
from server.config import AvatarSettings
from server.consent import ConsentRecord
from server.image_checks import UploadError, decode_image, extension_type, inspect_image

log = logging.getLogger("server.uploads")

UPLOAD_PREFIX = "upload-"
CHUNK_BYTES = 1024 * 1024
"""Largest binary frame of an upload (``server.max_message_bytes`` must allow it; its default is 3 MiB)."""
DECODE_MAX_SIDE = 1600
"""Uploaded photos are decoded at most this large (longer side, pixels): plenty for a 512 px stream."""
UPLOAD_WINDOW_S = 600.0
MAX_RECEIVING = 4
RECEIVE_TIMEOUT_S = 60.0
"""An announced upload whose bytes have not all arrived after this long gives up its receiving slot."""
MAX_PREPARING = 2
"""Uploads being decoded/prepared or waiting for it; more get 'busy' (one runs at a time)."""
MAX_STORED_PER_CLIENT = 3
MAX_STORED = 64
OTHER_FACE_SHARE = 0.4
"""A second face counts when its landmark box is at least this share of the largest face's size."""
PREVIEW_QUALITY = 85


@dataclass(frozen=True)
class UploadRequest:
    name: str
    size: int
    """Bytes the client will send."""
    mime: str | None = None
    consent: bool = False


@dataclass
class _Receiving:
    request: UploadRequest
    host: str
    started: float
    data: bytearray = field(default_factory=bytearray)


@dataclass
class _Stored:
    avatar: PreparedAvatar
    owner: str
    last_used: float
    record: ConsentRecord
    """When it was added, by which address, and whether the visitor confirmed consent (server/consent.py)."""


@dataclass(frozen=True)
class PreparedUpload:
    avatar: PreparedAvatar
    details: dict[str, Any]
    """Reply fields: source width/height, face_px, preview (JPEG data URL), warnings, timings (ms)."""


def prepare_upload(engine: Engine, data: bytes, request: UploadRequest, avatar_id: str,
                   max_pixels: int, framing: str | None = None) -> PreparedUpload:
    """Blocking (run it in a worker thread): check, decode, find exactly one usable face, prepare with
    ``framing`` (``avatar.framing``; None: the engine's default)."""
    t0 = time.perf_counter()
    info = inspect_image(data, request.name, request.mime, max_pixels)
    rgb = decode_image(data, info, DECODE_MAX_SIDE)
    t1 = time.perf_counter()
    faces = detect_faces(rgb)
    if not faces:
        raise UploadError("no face found in the photo; use a clear, front-facing picture of one face")
    sizes = [float(np.ptp(face[:, :2], axis=0).max()) for face in faces]  # landmark box's longer side, px
    others = [s for s in sizes[1:] if s >= OTHER_FACE_SHARE * sizes[0]]
    if others:
        raise UploadError(f"found {1 + len(others)} faces in the photo; upload a photo of one person "
                          "(or crop it to one face)")
    to_source = max(info.width, info.height) / max(rgb.shape[:2])
    if sizes[0] < MIN_FACE_PX:
        raise UploadError(f"the face is too small: about {sizes[0] * to_source:.0f} px across in the photo "
                          f"(at least {MIN_FACE_PX * to_source:.0f} px needed); use a closer photo")
    t2 = time.perf_counter()
    avatar = engine.prepare(rgb, avatar_id, framing)
    t3 = time.perf_counter()
    bgr = cv2.cvtColor(avatar.image, cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])
    preview = "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode() if ok else None
    details = {
        "width": info.width, "height": info.height, "face_px": round(sizes[0] * to_source),
        "preview": preview, "warnings": list(avatar.warnings),
        "ms": {"decode": round((t1 - t0) * 1000), "faces": round((t2 - t1) * 1000),
               "prepare": round((t3 - t2) * 1000)},
    }
    return PreparedUpload(avatar, details)


class PortraitUploads:
    """Receives, prepares and keeps uploaded portraits; ``key`` is whatever identifies one socket."""

    def __init__(self, engine: Engine, settings: AvatarSettings, max_message_bytes: int = 2 * CHUNK_BYTES,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.settings = settings
        self.chunk_bytes = min(CHUNK_BYTES, max_message_bytes // 2)
        self.now = now
        self._receiving: dict[object, _Receiving] = {}
        self._stored: collections.OrderedDict[str, _Stored] = collections.OrderedDict()
        self._recent: dict[str, collections.deque[float]] = {}
        self._preparing = 0
        self._one_at_a_time = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.allow_upload

    def __len__(self) -> int:
        return len(self._stored)

    # ------------------------------------------------------------------------------- receiving
    def begin(self, key: object, host: str, request: UploadRequest) -> dict[str, Any]:
        """Accept an announced upload (the ``upload_ready`` reply's fields) or raise ``UploadError``."""
        s = self.settings
        if not s.allow_upload:
            raise UploadError("uploading portraits is turned off on this server (avatar.allow_upload)")
        if s.require_consent and not request.consent:
            raise UploadError("consent needed: confirm that the person in the photo agreed to be animated")
        extension_type(request.name)
        if request.size > s.max_upload_bytes:
            raise UploadError(f"the file is {request.size / 1e6:.1f} MB; at most "
                              f"{s.max_upload_bytes / 1e6:.0f} MB")
        self._receiving.pop(key, None)  # a new announcement replaces an unfinished upload
        now = self.now()
        for stale in [k for k, item in self._receiving.items() if now - item.started >= RECEIVE_TIMEOUT_S]:
            del self._receiving[stale]
        if len(self._receiving) >= MAX_RECEIVING:
            raise UploadError("the server is receiving other portraits; try again in a few seconds")
        recent = self._recent.setdefault(host, collections.deque())
        while recent and now - recent[0] >= UPLOAD_WINDOW_S:
            recent.popleft()
        if len(recent) >= s.uploads_per_client:
            raise UploadError(f"too many uploads: at most {s.uploads_per_client} per "
                              f"{UPLOAD_WINDOW_S / 60:.0f} minutes; try again later")
        recent.append(now)
        self._receiving[key] = _Receiving(request, host, now)
        return {"max_chunk_bytes": self.chunk_bytes}

    def receiving(self, key: object) -> bool:
        return key in self._receiving

    async def receive(self, key: object, chunk: bytes) -> tuple[str, dict[str, Any]]:
        """One binary frame: ``("upload_progress", fields)``, or after the last ``("portrait", fields)``."""
        pending = self._receiving.get(key)
        if pending is None:
            raise UploadError("binary data without an upload: send {\"type\": \"upload\", ...} first")
        if len(chunk) > self.chunk_bytes or len(pending.data) + len(chunk) > pending.request.size:
            self._receiving.pop(key, None)
            raise UploadError(f"upload larger than announced ({pending.request.size} bytes, frames of at "
                              f"most {self.chunk_bytes} bytes); upload again")
        pending.data += chunk
        if len(pending.data) < pending.request.size:
            return "upload_progress", {"received": len(pending.data), "bytes": pending.request.size}
        del self._receiving[key]
        return "portrait", await self._prepare(pending)

    def forget(self, key: object) -> None:
        """The socket closed: drop what it was still sending."""
        self._receiving.pop(key, None)

    async def _prepare(self, pending: _Receiving) -> dict[str, Any]:
        if self._preparing >= MAX_PREPARING:
            raise UploadError("the server is preparing other portraits; try again in a few seconds")
        self._preparing += 1
        avatar_id = UPLOAD_PREFIX + secrets.token_urlsafe(18)
        try:
            async with self._one_at_a_time:
                done = await asyncio.to_thread(prepare_upload, self.engine, bytes(pending.data),
                                               pending.request, avatar_id, self.settings.max_upload_pixels,
                                               self.settings.framing)
        except AvatarError:
            raise
        except Exception as exc:  # an engine or decoder bug must not reach the visitor as a traceback
            log.error("upload preparation failed: %s: %s", exc.__class__.__name__, exc)
            raise UploadError(f"cannot prepare this photo ({exc.__class__.__name__})") from None
        finally:
            self._preparing -= 1
        record = ConsentRecord(added=datetime.now(UTC).isoformat(timespec="seconds"),
                               by=f"visitor upload from {pending.host}", consent=pending.request.consent,
                               present=True)
        self._keep(avatar_id, done.avatar, pending.host, record)
        log.info("uploaded portrait prepared size=%dx%d face_px=%s ms=%s consent=%s stored=%d",
                 done.details["width"], done.details["height"], done.details["face_px"], done.details["ms"],
                 record.consent, len(self._stored))
        return {"avatar": avatar_id, **done.details}

    # ---------------------------------------------------------------------------------- storing
    def _keep(self, avatar_id: str, avatar: PreparedAvatar, owner: str, record: ConsentRecord) -> None:
        mine = [key for key, item in self._stored.items() if item.owner == owner]
        for key in mine[: max(0, len(mine) - MAX_STORED_PER_CLIENT + 1)]:
            del self._stored[key]
        while len(self._stored) >= MAX_STORED:
            self._stored.popitem(last=False)
        self._stored[avatar_id] = _Stored(avatar, owner, self.now(), record)

    @staticmethod
    def is_upload_id(avatar_id: str | None) -> bool:
        return bool(avatar_id) and avatar_id.startswith(UPLOAD_PREFIX)

    def find(self, avatar_id: str, host: str) -> PreparedAvatar:
        """The prepared upload for ``host``; other clients' ids read as unknown."""
        item = self._stored.get(avatar_id)
        if item is None or item.owner != host:
            raise UploadError("that uploaded portrait is gone (uploads are dropped when idle); "
                              "upload it again")
        item.last_used = self.now()
        self._stored.move_to_end(avatar_id)
        return item.avatar

    async def at_size(self, avatar: PreparedAvatar, size: int | None) -> PreparedAvatar:
        """``avatar`` (a prepared upload) at the side ``size`` a session asked for: its framed picture,
        prepared again at that size in a worker thread (the engine caches it by content); ``size`` None
        or the upload's own: ``avatar`` itself. A size the engine does not render raises ``ConfigError``."""
        size = self.engine.output_size(size)
        if size == avatar.image.shape[0]:
            return avatar
        prepare = self.engine.prepare
        return await asyncio.to_thread(prepare, avatar.image, avatar.avatar_id, Framing.FULL, size)

    def consent_record(self, avatar_id: str) -> ConsentRecord | None:
        item = self._stored.get(avatar_id)
        return item.record if item is not None else None

    def touch(self, avatar_id: str) -> None:
        item = self._stored.get(avatar_id)
        if item is not None:
            item.last_used = self.now()

    def purge(self, in_use: set[str]) -> int:
        """Drop uploads idle for ``upload_idle_s`` that no running session streams; how many went."""
        now = self.now()
        idle = [key for key, item in self._stored.items()
                if key not in in_use and now - item.last_used >= self.settings.upload_idle_s]
        for key in idle:
            del self._stored[key]
        for host, times in list(self._recent.items()):
            if not times or now - times[-1] >= UPLOAD_WINDOW_S:
                del self._recent[host]
        return len(idle)
