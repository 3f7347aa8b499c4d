"""The one small interface every talking-head engine implements.

Timeline conventions (shared by the server and the offline renderer):

* Audio is mono float32 in [-1, 1] at ``SAMPLE_RATE`` (16 kHz); sample ``s`` sits at ``s / 16000`` s
  on the session timeline, which starts at the session's first audio sample.
* Video frame ``f`` at ``fps`` shows the instant ``f / fps`` s and covers audio samples
  ``[f * 16000 / fps, (f + 1) * 16000 / fps)`` (640 samples at 25 fps).
* A window asks for frames ``[first_frame, first_frame + num_frames)``; its ``samples`` start at
  ``start_sample`` and include left context before the first frame and right context (look-ahead,
  at most ~80 ms) after the last one. Windows may overlap; an engine returns exactly the frames
  ``[emit_from, first_frame + num_frames)``, in order (the earlier ones were returned for the
  previous window).

Engines are used from one worker thread per session (never from the event loop); a session's
methods are not called concurrently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar.errors import ConfigError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioWindow:
    """Timestamped audio for a run of video frames (see the module docstring for the timeline)."""

    samples: np.ndarray
    """float32, shape (n,), 16 kHz mono, samples[0] is timeline sample ``start_sample``."""
    start_sample: int
    first_frame: int
    num_frames: int
    fps: float
    emit_from: int
    """First frame index to return (``first_frame`` when windows do not overlap)."""
    speech: float = 0.0
    """Fraction (0..1) of the window's 20 ms VAD frames judged speech; 0 when silent."""

    @property
    def samples_per_frame(self) -> float:
        return SAMPLE_RATE / self.fps

    def frame_span(self, frame: int) -> tuple[int, int]:
        """Index range of ``samples`` covered by timeline frame ``frame`` (may be out of bounds)."""
        spf = self.samples_per_frame
        start = round(frame * spf) - self.start_sample
        return start, start + round(spf)


@dataclass
class Frame:
    """One rendered video frame on the session timeline."""

    index: int
    image: np.ndarray
    """uint8, shape (height, width, 3), RGB."""
    speaking: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def pts_seconds(self, fps: float) -> float:
        return self.index / fps


@dataclass
class PreparedAvatar:
    """A portrait analysed once by an engine and reusable across sessions (read-only after prepare)."""

    avatar_id: str
    image: np.ndarray
    """uint8 RGB portrait at the engine's output framing, shape (size, size, 3)."""
    data: Any = None
    """Engine-specific precomputed state (landmarks, meshes, reference features...)."""
    warnings: list[str] = field(default_factory=list)
    """One-line notices for the user (e.g. 'found 2 faces, animating the largest')."""


class EngineSession(ABC):
    """Per-session state of an engine (motion carried across windows, blink timers, RNG)."""

    @abstractmethod
    def process(self, window: AudioWindow) -> list[Frame]:
        """Render frames ``[window.emit_from, window.first_frame + window.num_frames)``."""

    def stage_timings(self) -> dict[str, float]:
        """Milliseconds per named stage (``avatar.stopwatch.Stopwatch``) spent in the latest ``process``
        call, e.g. ``{"motion": 0.4, "render": 9.1}``; empty when the engine does not time its stages."""
        return {}

    def interrupt(self) -> None:  # noqa: B027 - optional hook
        """Forget queued speech state so the next frames ease back to idle without a jump."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free per-session resources; idempotent."""


class Engine(ABC):
    """A talking-head engine: prepares portraits once, then opens sessions that turn audio into frames."""

    name: str = "engine"

    def __init__(self, fps: float = 25.0, size: int = 512) -> None:
        self.fps = float(fps)
        self.size = int(size)

    @abstractmethod
    def prepare(self, portrait: str | Path | np.ndarray, avatar_id: str | None = None,
                framing: str | None = None, size: int | None = None) -> PreparedAvatar:
        """Analyse a portrait (path or RGB uint8 array). Raises ``PortraitError`` with a one-line reason.

        ``framing``: ``full`` or ``head_and_shoulders`` (``avatar.face.framing.Framing``); None: the
        engine's own default. Engines that do not frame portraits may ignore it. ``size``: the square
        output side in px, one of ``output_sizes`` (``output_size`` checks it); None: ``self.size``."""

    @property
    def output_sizes(self) -> tuple[int, ...]:
        """Square output sides (px) a session may ask for (``size`` in an offer), ascending; ``self.size``
        is the default and the largest. Engines that render at one size only give ``(self.size,)``."""
        return (self.size,)

    def output_size(self, size: int | None) -> int:
        """``size`` if this engine renders it (None: ``self.size``); else a one-line ``ConfigError``."""
        if size is None:
            return self.size
        if size not in self.output_sizes:
            choices = ", ".join(str(s) for s in self.output_sizes)
            raise ConfigError(f"output size {size} is not offered by the {self.name} engine; "
                              f"use one of {choices}")
        return int(size)

    @abstractmethod
    def new_session(self, avatar: PreparedAvatar, seed: int = 0) -> EngineSession:
        """Open a session animating ``avatar``; randomness (blinks, sway) is seeded by ``seed``."""

    @property
    def lookahead_ms(self) -> float:
        """Audio (ms) past a window's last frame the engine reads: windows get at least this much right
        context (``WindowConfig.at_least``), whatever the configuration says; 0 when it reads none."""
        return 0.0

    @property
    def preferred_window(self) -> dict[str, float] | None:
        """Window geometry the engine needs (``WindowConfig`` field values), or None for any."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engine-wide resources."""
