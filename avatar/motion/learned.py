"""Streaming audio -> ``FaceMotion`` from the learned motion sampler (numpy only, causal, seeded).

The drop-in sibling of ``avatar.motion.rules.MotionGenerator``: same ``process(window)``, ``interrupt()``
and ``context_needed_ms()``. Mouth, jaw, brows, blinks, gaze and head come from the sampler (trained on
real speakers, ``docs/motion.md``); breathing, which the face mesh cannot see, from the rules' idle
motion.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from avatar.engine import SAMPLE_RATE, AudioWindow
from avatar.errors import ConfigError
from avatar.face.motion_types import FaceMotion
from avatar.motion.audio_features import AHEAD_HOPS, HOP, WIN
from avatar.motion.batching import DenoiseBatcher
from avatar.motion.network import MotionNets
from avatar.motion.representation import MotionBasis
from avatar.motion.rules import IdleMotion
from avatar.motion.sampler import SamplerKind, SamplerSettings, StreamingSampler

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "motion"
"""The shipped student (``avatar/assets/motion``): config.json, motion_weights.npz, README.md."""


class MotionModel:
    """A loaded motion sampler: the denoiser, its motion basis and its default sampler settings."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.net, config, arrays = MotionNets.from_pretrained(self.folder)
        self.basis = MotionBasis.from_arrays(arrays)
        options = config.get("sampler", {})
        try:
            self.settings = SamplerSettings(
                kind=SamplerKind(options.get("kind", "consistency")),
                steps=int(options.get("steps", 2)),
                guidance=float(options.get("guidance", 1.0)),
                mouth_temperature=float(options.get("mouth_temperature", 1.0)),
                head_temperature=float(options.get("head_temperature", 1.0)),
            )
        except ValueError as exc:
            raise ConfigError(f"motion model {self.folder}: bad sampler settings ({exc})") from None
        if any(abs(n.config.fps - 25.0) > 1e-6 for n in self.net.nets):
            raise ConfigError(f"motion model {self.folder} was not trained at 25 fps")
        self.start = self.basis.normalise(self.basis.rest_vector()[None])[0]
        self.net.fill = self.start
        self._batchers: dict[SamplerSettings, DenoiseBatcher] = {}
        self._batchers_lock = threading.Lock()

    def batcher(self, settings: SamplerSettings) -> DenoiseBatcher:
        """The one ``DenoiseBatcher`` of this model and ``settings``, shared by every session that samples
        with them (concurrent sessions' frames run as one batch: ``avatar/motion/batching.py``)."""
        with self._batchers_lock:
            return self._batchers.setdefault(settings, DenoiseBatcher(self.net, settings))


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load(folder: str) -> MotionModel:
    return MotionModel(folder)


def load_motion_model(folder: str | Path | None = None) -> MotionModel:
    """The motion model in ``folder`` (default: the shipped one), loaded once per process."""
    with _lock:
        return _load(str(Path(folder or SHIPPED_MODEL).resolve()))


class LearnedMotionGenerator:
    """Turns audio windows into one ``FaceMotion`` per video frame with the learned sampler."""

    def __init__(
        self,
        fps: float = 25.0,
        seed: int = 0,
        model: MotionModel | None = None,
        settings: SamplerSettings | None = None,
    ) -> None:
        if abs(float(fps) - 25.0) > 1e-6:
            raise ConfigError(f"learned motion runs at 25 fps, not {fps:g}: use motion: rules at other rates")
        self.fps = 25.0
        self.model = model or load_motion_model()
        settings = settings or self.model.settings
        self.sampler = StreamingSampler(
            self.model.net, self.model.start, settings, seed, self.fps, self.model.batcher(settings)
        )
        self._idle = IdleMotion(np.random.default_rng(seed))
        self._recent: dict[int, FaceMotion] = {}

    def context_needed_ms(self) -> float:
        """Right context past a window's last frame: its last hop ends 72.5 ms past the frame instant."""
        end = AHEAD_HOPS * HOP + WIN // 2
        return max(0.0, 1000.0 * end / SAMPLE_RATE - 1000.0 / self.fps)

    def process(self, window: AudioWindow) -> list[FaceMotion]:
        """One FaceMotion per frame in [emit_from, first_frame + num_frames), in order."""
        if abs(window.fps - self.fps) > 1e-6:
            raise ConfigError(f"audio window is at {window.fps:g} fps but learned motion at {self.fps:g} fps")
        self.sampler.feed(window.start_sample, window.samples)
        out = []
        for frame in range(window.emit_from, window.first_frame + window.num_frames):
            cached = self._recent.get(frame)
            if cached is not None:
                out.append(replace(cached))
                continue
            if frame < self.sampler.next_frame:  # far in the past: not kept
                out.append(self._compose(frame, self.model.start))
                continue
            while self.sampler.next_frame <= frame:
                made = self.sampler.next_frame
                self._recent[made] = self._compose(made, self.sampler.step())
            out.append(replace(self._recent[frame]))
        for old in [f for f in self._recent if f < self.sampler.next_frame - 32]:
            del self._recent[old]
        return out

    def interrupt(self) -> None:
        """The voice already queued is ignored for 0.4 s: the face settles with its learned dynamics."""
        start = round(self.sampler.next_frame * SAMPLE_RATE / self.fps)
        self.sampler.forget_audio_after(start)

    def _compose(self, frame: int, normalised: np.ndarray) -> FaceMotion:
        """The FaceMotion of ``frame`` from its normalised motion vector (27,), with its breathing."""
        raw = self.model.basis.denormalise(normalised[None])[0]
        return self.model.basis.face_motion(raw, breath=self._idle.breath(frame / self.fps))
