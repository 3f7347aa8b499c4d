"""EmoEngine: the EMO diffusion engine behind the project's ``Engine`` interface.

Windows: the session renders exactly the frames each window asks for (any count ≤ unet.max_frames −
motion frames; longer windows are split), with the previous frames' latents as motion frames. EMO is
trained on ``window.frames`` (12) frames per window, so servers should use ``EmoEngine.preferred_window``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avatar.emo.audio_encoder import frame_segments
from avatar.emo.checkpoint import build_pipeline, load_checkpoint
from avatar.emo.config import Composite, EmoConfig, FirstMotion, SpeedMode, load_emo_config
from avatar.emo.face_region import FaceRegion, composite, crop_face, face_region, locate_face
from avatar.emo.pipeline import EmoPipeline, ReferenceState
from avatar.engine import AudioWindow, Engine, EngineSession, Frame, PreparedAvatar
from avatar.errors import ConfigError
from avatar.face.framing import Framing, parse_framing
from avatar.face.motion_types import FaceMotion
from avatar.face.portrait import PortraitRig
from avatar.face.renderer import PortraitRenderer
from avatar.motion import MotionStream, create_motion, motion_source
from avatar.motion.canonical import BROW_POINTS
from avatar.stopwatch import Stopwatch

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "emo_demo"
"""The shipped demonstrator (config ``demo``; model card in its README.md)."""
UNTRAINED_HINT = (
    "train it for config {cfg} (docs/training.md) and pass the checkpoint with "
    "--set 'engine.options={{checkpoint: PATH}}', or use --engine parametric"
)


@dataclass
class EmoAvatarData:
    """Per-portrait cache shared by sessions (read-only). ``rig``: the parametric rig that adds head
    motion and blinks around the generated region (``face.composite: parametric``), else None."""

    region: FaceRegion
    reference: ReferenceState
    rig: PortraitRig | None = None


class EmoEngine(Engine):
    """EMO engine. ``config``: name in configs/emo or a yaml path; ``checkpoint``: folder saved by
    ``avatar.emo.checkpoint.save_checkpoint`` (default for the ``demo`` config: the shipped demo checkpoint).
    ``scheduler`` (lcm | tcd | ddim) and ``steps`` override the config's sampler (e.g. the teacher: ddim,
    25), ``audio_guidance`` its audio classifier-free guidance (teachers trained with audio drop).
    Refuses to start without trained weights unless ``allow_untrained``."""

    name = "emo"

    def __init__(
        self,
        fps: float = 25.0,
        size: int = 512,
        seed: int = 0,
        config: str | Path | EmoConfig = "demo",
        checkpoint: str | Path | None = None,
        allow_untrained: bool = False,
        toy: bool = False,
        threads: int | None = None,
        pipeline: EmoPipeline | None = None,
        scheduler: str | None = None,
        steps: int | None = None,
        audio_guidance: float | None = None,
        motion: str | None = None,
        motion_model: str | Path | None = None,
        framing: Framing | str = Framing.FULL,
    ) -> None:
        super().__init__(fps=fps, size=size)
        self.seed = int(seed)
        self.framing = parse_framing(framing)  # how portraits are framed unless prepare says otherwise
        self.motion = motion_source(motion, self.fps)  # head, blinks and brows around the generated mouth
        self.motion_model = None if motion_model is None else str(motion_model)
        create_motion(self.motion, self.fps, 0, self.motion_model)  # a bad model fails at start-up
        cfg = config if isinstance(config, EmoConfig) else load_emo_config(config, toy=toy)
        if checkpoint is None and pipeline is None and cfg.name == "demo" and DEMO_CHECKPOINT.is_dir():
            checkpoint = DEMO_CHECKPOINT
        # Default: every core this process may use (the server sets OMP_NUM_THREADS=1 for numpy's sake).
        torch.set_num_threads(int(threads) if threads else len(os.sched_getaffinity(0)))
        if pipeline is not None:
            self.pipeline = pipeline
        elif checkpoint is None:
            if not allow_untrained:
                raise ConfigError(
                    "the EMO engine has no trained checkpoint: " + UNTRAINED_HINT.format(cfg=cfg.name)
                )
            self.pipeline = build_pipeline(cfg, seed=self.seed)
        else:
            path = Path(checkpoint)
            if not path.exists():
                raise ConfigError(f"EMO checkpoint not found: {path}")
            self.pipeline = load_checkpoint(path, cfg)
        if self.pipeline.training_steps <= 0 and not allow_untrained:
            raise ConfigError(
                f"EMO checkpoint {checkpoint} is untrained (0 training steps): "
                + UNTRAINED_HINT.format(cfg=cfg.name)
            )
        overrides = {"scheduler": scheduler, "steps": steps, "audio_guidance": audio_guidance}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:  # configs are frozen: a refused override leaves the caller's config as it was
            self.pipeline.configure_sampler(**overrides)
        self.config = self.pipeline.config
        if self.config.face.crop_size > size:
            raise ConfigError(
                f"output size {size} is smaller than the EMO face region {self.config.face.crop_size}"
            )

    @property
    def preferred_window(self) -> dict[str, float]:
        """Window geometry EMO is trained for (``avatar.audio.windowing.WindowConfig`` fields)."""
        m = self.config.window.audio_context
        return {
            "frames_per_window": self.config.window.frames,
            "hop": self.config.window.frames,
            "left_context_ms": 1000.0 * m / self.fps,
            "right_context_ms": 1000.0 * m / self.fps,
        }

    def prepare(self, portrait: str | Path | np.ndarray, avatar_id: str | None = None,
                framing: Framing | str | None = None, size: int | None = None) -> PreparedAvatar:
        self.output_size(size)  # the UNet is trained for one face region: only ``self.size``
        rig = locate_face(portrait, self.size, self.framing if framing is None else parse_framing(framing))
        image, box = rig.image, tuple(int(v) for v in rig.face_box)
        face = self.config.face
        region = face_region(self.size, box, face.crop_size, face.crop_scale, face.feather, face.crop_shift)
        reference = self.pipeline.encode_reference(crop_face(image, region), region.face_mask)
        if avatar_id is None:
            avatar_id = Path(portrait).stem if isinstance(portrait, str | Path) else "portrait"
        animated = face.composite == Composite.PARAMETRIC
        data = EmoAvatarData(region, reference, rig if animated else None)
        return PreparedAvatar(avatar_id, image, data, list(rig.warnings))

    def new_session(self, avatar: PreparedAvatar, seed: int = 0) -> EmoSession:
        if not isinstance(avatar.data, EmoAvatarData):
            raise ConfigError("this avatar was prepared by another engine; prepare it with the EMO engine")
        return EmoSession(self, avatar, seed)


def _without_mouth(motion: FaceMotion) -> FaceMotion:
    """``motion`` with the mouth at rest (EMO generates it); brows, eyes and head kept."""
    expression = None
    if motion.expression is not None:
        expression = np.zeros_like(motion.expression)
        brows = list(BROW_POINTS)
        expression[brows] = motion.expression[brows]
    return dataclasses.replace(motion, jaw_open=0.0, lip_width=0.0, lip_press=0.0, expression=expression)


class EmoSession(EngineSession):
    """Streams windows: motion frames and overlap latents carried across calls, noise seeded per frame."""

    def __init__(self, engine: EmoEngine, avatar: PreparedAvatar, seed: int) -> None:
        self.engine = engine
        self.pipe = engine.pipeline
        self.avatar = avatar
        self.data: EmoAvatarData = avatar.data
        self.seed = int(seed)
        cfg = self.pipe.config.window
        self.n_motion = cfg.motion_frames
        self.crossfade = cfg.crossfade_frames
        self.max_chunk = self.pipe.config.unet.max_frames - self.n_motion - self.crossfade
        self.history: dict[int, torch.Tensor] = {}
        self.stopwatch = Stopwatch()
        """Stages of the latest ``process`` call: head_motion, audio, motion_frames, prepare, unet (one
        interval per step), decode, composite."""
        self.motion: MotionStream | None = None
        self.renderer: PortraitRenderer | None = None
        self.head: dict[int, FaceMotion] = {}
        if self.data.rig is not None:
            self.motion = create_motion(engine.motion, engine.fps, self.seed, engine.motion_model)
            self.renderer = PortraitRenderer(self.data.rig)

    def process(self, window: AudioWindow) -> list[Frame]:
        torch.set_flush_denormal(True)  # per thread: servers call this from their worker threads
        end = window.first_frame + window.num_frames
        frames: list[Frame] = []
        self.stopwatch.reset()
        if self.motion is not None:
            # head, eyes, brows and breathing from the parametric engine; the mouth is generated
            for i, m in enumerate(self.motion.process(window)):
                self.head[window.emit_from + i] = _without_mouth(m)
            self.stopwatch.lap("head_motion")
        start = window.emit_from
        while start < end:
            stop = min(end, start + max(1, self.max_chunk))
            frames.extend(self._render(window, start, stop))
            start = stop
        return frames

    def stage_timings(self) -> dict[str, float]:
        return self.stopwatch.totals()

    def _motion_latents(self, start: int) -> torch.Tensor | None:
        if self.n_motion == 0:
            return None
        past = [self.history.get(i) for i in range(start - self.n_motion, start)]
        if all(p is None for p in past) and self.pipe.config.window.first_motion == FirstMotion.ZEROS:
            return torch.zeros(self.n_motion, *self.data.reference.latent.shape[1:])
        ref = self.data.reference.latent[0]
        return torch.stack([ref if p is None else p for p in past])

    def _velocity(self, window: AudioWindow, first: int, count: int) -> torch.Tensor | None:
        speed = self.pipe.config.speed
        if speed.mode == SpeedMode.CONSTANT:
            return None
        seg = frame_segments(torch.from_numpy(window.samples), window.start_sample, first, count, window.fps)
        rms = seg.square().mean(dim=1).sqrt()
        return speed.velocity + speed.audio_gain * rms.clamp(0, 1)

    def _render(self, window: AudioWindow, start: int, stop: int) -> list[Frame]:
        watch = self.stopwatch
        watch.restart()
        k = sum(1 for i in range(start - self.crossfade, start) if i in self.history) if self.crossfade else 0
        first = start - k
        indices = list(range(first, stop))
        m = self.pipe.config.window.audio_context
        tokens = self.pipe.audio_tokens(window.samples, window.start_sample, first, len(indices), window.fps)
        velocity = self._velocity(window, first - m, len(indices) + 2 * m)
        pinned = torch.stack([self.history[i] for i in range(first, start)]) if k else None
        watch.lap("audio")
        out = self.pipe(
            self.data.reference,
            tokens,
            indices,
            self._motion_latents(first),
            velocity,
            seed=self.seed,
            pinned_latents=pinned,
            stopwatch=watch,
        )
        watch.restart()
        result = []
        for j, index in enumerate(indices):
            self.history[index] = out.latents[j]
            if index < start:
                continue
            image = composite(self.avatar.image, out.images[j - k], self.data.region)
            if self.renderer is not None:
                motion = self.head.pop(index, FaceMotion())
                image = self.renderer.render(motion, source=image, paint_mouth=False)
            result.append(
                Frame(index=index, image=image, speaking=window.speech > 0.0, info={"engine": "emo"})
            )
        keep = max(self.n_motion, self.crossfade)
        for old in [i for i in self.history if i < stop - keep]:
            del self.history[old]
        watch.lap("composite")
        return result

    def interrupt(self) -> None:
        """Nothing queued: motion frames keep the next window continuous with what was shown."""
        if self.motion is not None:
            self.motion.interrupt()

    def close(self) -> None:
        self.history.clear()
        self.head.clear()
