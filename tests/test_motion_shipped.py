"""The shipped motion model (avatar/assets/motion): loads without torch, follows the voice, stays put."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.engine import SAMPLE_RATE, AudioWindow
from avatar.motion import DEFAULT_MOTION, MotionSource, create_motion, motion_source
from avatar.motion.learned import SHIPPED_MODEL, MotionModel
from avatar.motion.representation import SLICES

pytestmark = pytest.mark.skipif(
    not (SHIPPED_MODEL / "config.json").is_file(), reason="no shipped motion model"
)


def _syllables(seconds: float, rate_hz: float = 4.0, seed: int = 0) -> np.ndarray:
    """Voiced syllables (a 140 Hz buzz with vowel-like formants) at ``rate_hz``, 0.25 amplitude."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    buzz = np.sign(np.sin(2 * np.pi * 140 * t)) * 0.5
    vowel = buzz * (np.sin(2 * np.pi * 700 * t) + 0.6 * np.sin(2 * np.pi * 1200 * t))
    envelope = np.clip(np.sin(2 * np.pi * rate_hz * t), 0.0, 1.0) ** 2
    return (0.25 * envelope * vowel / 2 + 0.002 * rng.normal(size=t.size)).astype(np.float32)


def _stream(generator, audio: np.ndarray) -> list:
    spf = SAMPLE_RATE // 25
    out = []
    for f in range(audio.size // spf):
        start = max(0, f * spf - 3200)
        stop = (f + 1) * spf + 1280
        samples = np.zeros(stop - start, np.float32)
        chunk = audio[start:stop]
        samples[: chunk.size] = chunk
        out.extend(generator.process(AudioWindow(samples, start, f, 1, 25.0, f)))
    return out


def _opening(motions) -> np.ndarray:
    """Mean inner-lip gap change (face heights) of each frame's expression offsets."""
    from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER

    low, up = list(LIPS_INNER_LOWER[1:-1]), list(LIPS_INNER_UPPER[1:-1])
    return np.array([(m.expression[low, 1] - m.expression[up, 1]).mean() for m in motions])


def test_shipped_model_loads_and_fits_its_layout():
    model = MotionModel(SHIPPED_MODEL)
    assert sorted(model.net.parts) == ["head", "mouth"]
    assert (SHIPPED_MODEL / "README.md").is_file(), "the shipped weights need their model card"
    size = sum(p.stat().st_size for p in SHIPPED_MODEL.iterdir())
    assert size < 20 * 1024 * 1024


def test_mouth_follows_the_voice_and_rests_in_silence(tmp_path):
    from avatar.audio.io import load_audio
    from tests.fixtures_media import speech_wav_48k

    speech = load_audio(speech_wav_48k(tmp_path / "speech.wav", lead_silence_s=0.0, tail_silence_s=0.0))
    audio = np.concatenate(
        [np.zeros(2 * SAMPLE_RATE, np.float32), speech, np.zeros(3 * SAMPLE_RATE, np.float32)]
    )
    motions = _stream(create_motion(MotionSource.LEARNED, 25.0, 0), audio)
    opening = _opening(motions)
    spoken = opening[55 : 50 + speech.size // 640 - 5]
    before, after = opening[:45], opening[-50:]
    assert spoken.mean() > max(before.mean(), after.mean()) + 0.01, (
        spoken.mean(),
        before.mean(),
        after.mean(),
    )
    assert spoken.std() > 2 * max(before.std(), after.std())
    # The mouth opens with the voice: its opening correlates with the loudness envelope.
    spf = SAMPLE_RATE // 25
    rms = np.sqrt([np.mean(audio[f * spf : (f + 1) * spf] ** 2) for f in range(len(motions))])
    best = max(np.corrcoef(opening[lag:], rms[: len(rms) - lag])[0, 1] for lag in range(0, 4))
    assert best > 0.3, best


def test_head_stays_bounded_and_keeps_moving_in_long_silence_and_speech():
    rng = np.random.default_rng(3)
    parts = []
    for i in range(6):
        parts.append(_syllables(rng.uniform(3, 6), seed=i))
        parts.append(np.zeros(int(rng.uniform(3, 6) * SAMPLE_RATE), np.float32))
    motions = _stream(create_motion(MotionSource.LEARNED, 25.0, 7), np.concatenate(parts))
    yaw = np.degrees([m.head_yaw for m in motions])
    pitch = np.degrees([m.head_pitch for m in motions])
    assert abs(yaw.mean()) < 3.0 and abs(pitch.mean()) < 3.0  # no drift to one side
    assert 1.0 < yaw.std() < 12.0  # a live head, not a frozen one
    blinks = np.array([m.blink for m in motions])
    assert ((blinks[1:] > 0.5) & (blinks[:-1] <= 0.5)).sum() >= 2  # it blinks in ~50 s
    assert all(np.isfinite(m.expression).all() for m in motions)


def test_default_motion_and_frame_rates():
    assert motion_source(None, 25.0) == DEFAULT_MOTION
    assert motion_source(None, 30.0) == MotionSource.RULES  # the sampler runs at 25 fps only
    generator = create_motion(None, 30.0, 0)
    assert generator.__class__.__name__ == "MotionGenerator"


def test_slices_cover_the_vector():
    covered = np.zeros(SLICES.head.stop, bool)
    for block in (SLICES.mouth, SLICES.brows, SLICES.gaze, SLICES.head):
        covered[block] = True
    covered[SLICES.blink] = True
    assert covered.all()
