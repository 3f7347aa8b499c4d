"""The voice normalisation of the motion model's audio input: running mean, streaming, invariance."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.motion.audio_features import clip_mel_power, log_mel
from avatar.motion.learned import MotionModel
from avatar.motion.network import MotionNets
from avatar.motion.sampler import sample_clips
from avatar.motion.voice_normaliser import VoiceNormalisation, speech_hops
from tests.test_learned_motion import TINY, _run, _speech, _tiny_basis, _tiny_params

PRIOR = np.linspace(-1.0, 0.0, 40).astype(np.float32)


def _rows(level: float, hops: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level + 0.05 * rng.normal(size=(hops, 40))).astype(np.float32)


def test_mean_starts_at_prior_follows_speech_and_ignores_silence():
    voice = VoiceNormalisation(PRIOR, prior_hops=100.0, memory_s=1e5)  # (forgetting aside)
    state = voice.start()
    speech = _rows(0.5, 300)
    means = voice.running_means(speech, state)
    assert np.allclose(means[0], (100 * PRIOR + speech[0]) / 101, atol=1e-5)
    # After 300 hops of speech the mean is three quarters of the way to the voice's (weights 300:100).
    assert np.allclose(means[-1], 0.25 * PRIOR + 0.75 * speech.mean(axis=0), atol=0.02)
    # Digital silence and a quiet noise floor 40 dB below the speech do not move it.
    quiet = np.concatenate([np.full((200, 40), -3.0, np.float32), _rows(-1.5, 200)])
    after = voice.running_means(quiet, state)
    assert np.allclose(after, means[-1], atol=1e-6)


def test_mean_forgets_an_old_voice():
    voice = VoiceNormalisation(PRIOR, prior_hops=100.0, memory_s=5.0)
    state = voice.start()
    voice.running_means(_rows(0.5, 3000), state)
    after = voice.running_means(_rows(-0.5, 3000, 1), state)[-1]
    assert np.allclose(after, -0.5, atol=0.01)  # 30 s of the new voice: the old one (and prior) is gone


def test_chunked_equals_one_pass():
    voice = VoiceNormalisation(PRIOR, prior_hops=50.0, memory_s=2.0)
    rows = np.concatenate([_rows(0.3, 150), _rows(-2.0, 80, 1), _rows(0.1, 170, 2)])
    whole = voice.running_means(rows, voice.start())
    state = voice.start()
    parts = [voice.running_means(rows[a:b], state) for a, b in [(0, 7), (7, 160), (160, 161), (161, 400)]]
    assert np.array_equal(np.concatenate(parts), whole)
    assert set(speech_hops(rows)) == set(range(150)) | set(range(230, 400))


def test_bad_prior_is_refused():
    with pytest.raises(ValueError):
        VoiceNormalisation(np.zeros(12, np.float32))
    with pytest.raises(ValueError):
        VoiceNormalisation(PRIOR, prior_hops=0.0)


def _save(folder, voice: VoiceNormalisation | None) -> MotionModel:
    MotionNets.save_pretrained(
        folder,
        TINY,
        [_tiny_params(c, seed=i) for i, c in enumerate(TINY)],
        {**_tiny_basis().arrays(), **({"voice.prior": voice.prior} if voice else {})},
        {"sampler": {"kind": "consistency", "steps": 2}, **({"voice": voice.to_config()} if voice else {})},
    )
    return MotionModel(folder)


@pytest.fixture(scope="module")
def voice_models(tmp_path_factory):
    prior = log_mel(clip_mel_power(_speech(3.0)))
    prior = prior[speech_hops(prior)].mean(axis=0)
    voice = VoiceNormalisation(prior, prior_hops=1.0, memory_s=600.0)
    plain = _save(tmp_path_factory.mktemp("plain"), None)
    normalised = _save(tmp_path_factory.mktemp("voice"), voice)
    assert normalised.net.voice is not None and plain.net.voice is None
    return plain, normalised


def test_streaming_equals_offline_with_voice_normalisation(voice_models):
    _, model = voice_models
    audio = _speech(2.0, seed=4) * 0.2  # quieter than the prior's voice: the shift is not zero
    total = 45
    one, twelve = _run(model, audio, 1, total), _run(model, audio, 12, total)
    for a, b in zip(one, twelve, strict=True):
        assert np.allclose(a.expression, b.expression, atol=1e-6)
    offline = sample_clips(model.net, [clip_mel_power(audio)], [total], model.start, model.settings)[0]
    raw = model.basis.denormalise(offline)
    assert np.allclose(
        np.stack([model.basis.expression(v) for v in raw]), [m.expression for m in one], atol=1e-5
    )


def test_a_louder_microphone_changes_the_face_less(voice_models):
    """A voice 12 dB louder (or a microphone with more gain) is the same voice: once the running mean
    has heard it, the normalised model's motion barely changes, the plain model's does."""
    audio = _speech(6.0, seed=5)
    frames = 150

    def motion(model: MotionModel, gain: float) -> np.ndarray:
        out = sample_clips(model.net, [clip_mel_power(audio * gain)], [frames], model.start, model.settings)
        return out[0][50:]  # after two seconds of speech

    changes = {}
    for name, model in zip(("plain", "voice"), voice_models, strict=True):
        changes[name] = float(np.abs(motion(model, 4.0) - motion(model, 1.0)).mean())
    assert changes["voice"] < 0.2 * changes["plain"], changes
