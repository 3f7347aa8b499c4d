"""The parametric engine: acoustic features -> FaceMotion -> landmark-mesh warp of the portrait.

Runs in real time on a CPU with no learned talking-head weights (MediaPipe's face mesh, shipped in its
pip package, is the only model). Implements ``avatar.engine.Engine``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from avatar.engine import AudioWindow, Engine, EngineSession, Frame, PreparedAvatar
from avatar.errors import PortraitError
from avatar.face.framing import Framing, parse_framing
from avatar.face.portrait import PortraitRig, prepare_portrait
from avatar.face.renderer import PortraitRenderer
from avatar.motion import MotionSource, create_motion, motion_source
from avatar.stopwatch import Stopwatch


def _portrait_key(portrait: str | Path | np.ndarray, size: int, framing: Framing = Framing.FULL) -> str:
    """Content hash of a portrait (file bytes or pixels), output size and framing, for the preparation
    cache."""
    digest = hashlib.sha1(f"{size}:{framing}".encode())
    if isinstance(portrait, np.ndarray):
        digest.update(str(portrait.shape).encode())
        digest.update(np.ascontiguousarray(portrait).tobytes())
    else:
        path = Path(portrait)
        try:
            digest.update(path.read_bytes())
        except FileNotFoundError:
            raise PortraitError(f"portrait file not found: {path}") from None
        except IsADirectoryError:
            raise PortraitError(f"portrait path is a folder, not an image: {path}") from None
        except OSError as exc:
            raise PortraitError(f"cannot read portrait {path}: {exc.strerror}") from None
    return digest.hexdigest()


SESSION_SIZES = (256, 384, 512)
"""Square output sides (px) a session may ask for, up to ``engine.size`` (a smaller picture costs less
CPU per frame: docs/benchmarks.md, "Where a session's milliseconds go")."""


class ParametricSession(EngineSession):
    """One live or offline stream: a motion generator (stateful, seeded) and a renderer."""

    def __init__(self, rig: PortraitRig, fps: float, seed: int, motion: MotionSource,
                 motion_model: str | None) -> None:
        self._motion = create_motion(motion, fps, seed, motion_model)
        self._renderer = PortraitRenderer(rig)
        self._stopwatch = Stopwatch()

    def process(self, window: AudioWindow) -> list[Frame]:
        """Stages timed: ``motion`` (audio features → FaceMotion), ``render`` (mesh warp + mouth, one
        interval per frame)."""
        watch = self._stopwatch
        watch.reset()
        motions = self._motion.process(window)
        watch.lap("motion")
        speaking = window.speech > 0.0
        frames = []
        for i, m in enumerate(motions):
            image = self._renderer.render(m)
            frames.append(Frame(index=window.emit_from + i, image=image, speaking=speaking))
            watch.lap("render")
        return frames

    def stage_timings(self) -> dict[str, float]:
        return self._stopwatch.totals()

    def interrupt(self) -> None:
        self._motion.interrupt()


class ParametricEngine(Engine):
    """CPU engine; ``prepare`` is cached per portrait content and size (thread-safe)."""

    name = "parametric"

    def __init__(self, fps: float = 25.0, size: int = 512, seed: int = 0, cache_size: int = 16,
                 motion: str | None = None, motion_model: str | None = None,
                 framing: Framing | str = Framing.FULL, **_: Any):
        """``framing``: how portraits are framed unless ``prepare`` says otherwise (``full`` or
        ``head_and_shoulders``, ``avatar.face.framing``). ``motion``: ``learned`` (the motion sampler;
        ``motion_model`` a model folder, default the shipped one; 25 fps only) or ``rules`` (hand-written,
        any fps); None: the default (``avatar.motion.DEFAULT_MOTION`` at 25 fps, else rules).
        A bad choice or model raises ``ConfigError`` here, at start-up."""
        super().__init__(fps=fps, size=size)
        self.seed = int(seed)
        self.framing = parse_framing(framing)
        self.motion = motion_source(motion, self.fps)
        self.motion_model = None if motion_model is None else str(motion_model)
        # fail now, not per session; and learn how far past a window its motion reads
        probe = create_motion(self.motion, self.fps, 0, self.motion_model)
        self._context_needed_ms = probe.context_needed_ms()
        self._cache: OrderedDict[str, PreparedAvatar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def lookahead_ms(self) -> float:
        """The look-ahead the motion reads past a window's last frame (``context_needed_ms``: 32.5 ms for
        the learned motion, 34 for the rules at 25 fps); windows with at least this much give the same
        motion whatever their size, and every millisecond more delays each frame."""
        return self._context_needed_ms

    @property
    def output_sizes(self) -> tuple[int, ...]:
        """The smaller ``SESSION_SIZES`` and ``self.size``: a session may ask for a cheaper picture, never
        a larger one than the operator configured."""
        return tuple(sorted({s for s in SESSION_SIZES if s < self.size} | {self.size}))

    def prepare(self, portrait: str | Path | np.ndarray, avatar_id: str | None = None,
                framing: Framing | str | None = None, size: int | None = None) -> PreparedAvatar:
        framing = self.framing if framing is None else parse_framing(framing)
        size = self.output_size(size)
        key = _portrait_key(portrait, size, framing)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached if avatar_id is None else dataclasses.replace(cached, avatar_id=avatar_id)
        rig = prepare_portrait(portrait, size=size, framing=framing)
        if avatar_id is None:
            avatar_id = Path(portrait).stem if not isinstance(portrait, np.ndarray) else key[:12]
        prepared = PreparedAvatar(avatar_id=avatar_id, image=rig.image, data=rig, warnings=list(rig.warnings))
        with self._lock:
            self._cache[key] = prepared
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return prepared

    def new_session(self, avatar: PreparedAvatar, seed: int = 0) -> ParametricSession:
        if not isinstance(avatar.data, PortraitRig):
            raise PortraitError("avatar was prepared by another engine; prepare it with this one")
        return ParametricSession(avatar.data, self.fps, seed, self.motion, self.motion_model)
