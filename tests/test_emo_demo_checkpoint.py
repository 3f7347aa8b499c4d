"""The demo EMO checkpoint shipped in the package: size, model card, and that its mouth follows a voice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.emo.engine import DEMO_CHECKPOINT
from avatar.engines import create_engine
from avatar.render import render_frames
from tests.media import ASTRONAUT, vowel_bursts

torch.set_num_threads(2)


def test_demo_checkpoint_is_small_and_documented():
    weights = list(DEMO_CHECKPOINT.rglob("*.safetensors"))
    assert len(weights) >= 7  # one per model
    assert sum(f.stat().st_size for f in weights) <= 30 * 2**20
    card = (DEMO_CHECKPOINT / "README.md").read_text()
    for section in ("Data", "Training", "Metrics", "Limits"):
        assert f"## {section}" in card


@pytest.fixture(scope="module")
def demo_frames():
    engine = create_engine("emo", fps=25, size=256, seed=0)
    assert engine.pipeline.training_steps > 0
    avatar = engine.prepare(ASTRONAUT)
    audio = vowel_bursts(3.0, lead_silence_s=1.0, burst_s=0.4, gap_s=0.3)
    frames = list(render_frames(engine, avatar, audio, seed=0, watermark=False))
    return avatar, audio, frames


def test_demo_engine_streams_every_frame_at_output_size(demo_frames):
    _, audio, frames = demo_frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert abs(len(frames) - len(audio) / 16000 * 25) <= 1
    assert all(f.image.shape == (256, 256, 3) for f in frames)


def test_demo_mouth_moves_with_the_voice_and_rests_in_silence(demo_frames):
    """Mean grey level inside the lips, per frame: it changes while the vowels sound (the mouth opens,
    the dark interior shows) and stays nearly constant through the silent first second."""
    avatar, audio, frames = demo_frames
    lm = avatar.data.rig.landmarks
    centre = (lm[13] + lm[14]) / 2
    half_w = 0.35 * np.linalg.norm(lm[291] - lm[61])
    x0, x1 = int(centre[0] - half_w), int(centre[0] + half_w)
    y0, y1 = int(centre[1] - 0.5 * half_w), int(centre[1] + 0.8 * half_w)
    grey = np.array([f.image[y0:y1, x0:x1].mean() for f in frames])
    silent = grey[3:22]  # 0.12-0.88 s: before the first vowel (look-ahead 80 ms)
    spoken = grey[28:]
    assert spoken.std() > 4.0 * silent.std() + 2.0  # measured 17.7 vs 1.1 (grey levels)
    assert spoken.max() - spoken.min() > 20.0  # measured 55
