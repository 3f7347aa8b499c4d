"""Audio -> per-frame ``FaceMotion``: the learned motion sampler (``learned``) or hand-written rules
(``rules``).

``create_motion`` is what both engines call; ``MotionSource`` names the choice (engine option ``motion``).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Protocol

from avatar.engine import AudioWindow
from avatar.errors import ConfigError
from avatar.face.motion_types import FaceMotion


class MotionSource(StrEnum):
    LEARNED = "learned"
    RULES = "rules"


DEFAULT_MOTION = MotionSource.LEARNED
LEARNED_FPS = 25.0
"""The learned sampler generates frames at this rate only (it was trained on a 25 fps grid)."""


class MotionStream(Protocol):
    """What an engine session needs from a motion generator."""

    def process(self, window: AudioWindow) -> list[FaceMotion]: ...

    def interrupt(self) -> None: ...

    def context_needed_ms(self) -> float: ...


def motion_source(value: object, fps: float = 25.0) -> MotionSource:
    """``value`` as a MotionSource (None: the default, ``learned``, except at frame rates other than 25
    fps, where only the rules run); ConfigError with the choices otherwise."""
    if value is None:
        return DEFAULT_MOTION if abs(float(fps) - LEARNED_FPS) < 1e-6 else MotionSource.RULES
    try:
        return MotionSource(str(value))
    except ValueError:
        choices = ", ".join(m.value for m in MotionSource)
        raise ConfigError(f"unknown motion {value!r}; choose one of: {choices}") from None


def create_motion(
    source: MotionSource | str | None, fps: float, seed: int, model: str | Path | None = None
) -> MotionStream:
    """A seeded motion generator. ``learned`` loads ``model`` (a motion model folder; default: the
    shipped one) and runs at 25 fps only; ``rules`` runs at any rate; None picks the default."""
    source = motion_source(source, fps)
    if source == MotionSource.RULES:
        from avatar.motion.rules import MotionGenerator

        return MotionGenerator(fps=fps, seed=seed)
    from avatar.motion.learned import LearnedMotionGenerator, load_motion_model

    return LearnedMotionGenerator(fps=fps, seed=seed, model=load_motion_model(model))
