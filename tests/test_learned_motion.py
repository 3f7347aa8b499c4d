"""The learned motion sampler: numpy inference matches torch, streaming equals offline, seeds, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar.engine import SAMPLE_RATE, AudioWindow
from avatar.errors import ConfigError
from avatar.motion import MotionSource, create_motion, motion_source
from avatar.motion.learned import LearnedMotionGenerator, MotionModel
from avatar.motion.network import CONFIG_NAME, WEIGHTS_NAME, MotionDenoiser, MotionNetConfig, MotionNets
from avatar.motion.representation import MOTION_DIM, SLICES, MotionBasis, part_dims
from avatar.motion.sampler import SamplerKind, SamplerSettings, sample_clips

TINY = [
    MotionNetConfig(part=part, hidden=16, blocks=1, audio_hidden=8, context_frames=3)
    for part in ("mouth", "head")
]


def _tiny_params(config: MotionNetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    from avatar.training.motion_model import MotionDenoiserModule

    torch.manual_seed(seed)
    module = MotionDenoiserModule(config)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return module.numpy_params()


def _tiny_basis() -> MotionBasis:
    rng = np.random.default_rng(0)
    basis = MotionBasis.fit_pca(rng.normal(0.0, 0.01, size=(64, 478, 3)).astype(np.float32))
    vectors = basis.encode(
        rng.normal(0.0, 0.01, size=(64, 478, 3)).astype(np.float32),
        rng.random(64),
        rng.normal(0, 0.05, (64, 2)),
        rng.normal(0, 0.05, (64, 5)),
    )
    basis.fit_normalisation(vectors)
    return basis


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("motion_model")
    MotionNets.save_pretrained(
        folder,
        TINY,
        [_tiny_params(c, seed=i) for i, c in enumerate(TINY)],
        _tiny_basis().arrays(),
        {"sampler": {"kind": "consistency", "steps": 2}},
    )
    return folder


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * t))
    return (0.3 * envelope * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def _windows(audio: np.ndarray, frames_per_window: int, total: int, right_ms: float = 80.0):
    spf = SAMPLE_RATE // 25
    right = int(right_ms * SAMPLE_RATE / 1000)
    for first in range(0, total, frames_per_window):
        count = min(frames_per_window, total - first)
        start = max(0, first * spf - 3200)
        stop = (first + count) * spf + right
        samples = np.zeros(stop - start, np.float32)
        chunk = audio[start:stop]
        samples[: chunk.size] = chunk
        yield AudioWindow(samples, start, first, count, 25.0, first)


def _run(model: MotionModel, audio: np.ndarray, frames_per_window: int, total: int, seed: int = 0):
    gen = LearnedMotionGenerator(seed=seed, model=model)
    out = []
    for window in _windows(audio, frames_per_window, total):
        out.extend(gen.process(window))
    return out


@pytest.mark.parametrize("config", TINY, ids=lambda c: c.part)
def test_numpy_denoiser_matches_torch(config):
    torch = pytest.importorskip("torch")
    from avatar.training.motion_model import MotionDenoiserModule

    params = _tiny_params(config, seed=3)
    module = MotionDenoiserModule(config).eval()
    module.load_numpy_params(params)
    net = MotionDenoiser(config, params)
    rng = np.random.default_rng(1)
    dim = config.motion_dim
    mel = rng.normal(size=(4, config.audio_hops, config.n_mels)).astype(np.float32)
    context = rng.normal(size=(4, config.context_frames, dim)).astype(np.float32)
    x = rng.normal(size=(4, dim)).astype(np.float32)
    t = np.array([0.0, 0.3, 0.7, 1.0], np.float32)
    with torch.no_grad():
        cond = module.condition(torch.from_numpy(mel), torch.from_numpy(context))
        expected = module.velocity(torch.from_numpy(x), torch.from_numpy(t), cond).numpy()
    got = net.velocity(x, t, net.condition(mel, context))
    assert np.abs(got - expected).max() < 1e-4
    # The mouth follows the voice alone; the head also continues its last motion frames.
    moved = net.condition(mel, context + 1.0)
    assert np.allclose(moved, net.condition(mel, context)) == (config.part == "mouth")


def test_parts_assemble_the_whole_vector(tiny_model):
    nets, _, _ = MotionNets.from_pretrained(tiny_model)
    assert sorted(nets.parts) == ["head", "mouth"]
    covered = np.sort(np.concatenate([part_dims(p) for p in nets.parts]))
    assert np.array_equal(covered, np.arange(MOTION_DIM))
    rng = np.random.default_rng(2)
    mel = rng.normal(size=(2, 48, 40)).astype(np.float32)
    context = rng.normal(size=(2, nets.context_frames, MOTION_DIM)).astype(np.float32)
    x = rng.normal(size=(2, MOTION_DIM)).astype(np.float32)
    v = nets.velocity(x, np.ones(2, np.float32), nets.condition(mel, context))
    head = next(n for n in nets.nets if n.config.part == "head")
    alone = head.velocity(
        x[:, head.config.dims], np.ones(2, np.float32), head.condition(mel, context[..., head.config.dims])
    )
    assert np.allclose(v[:, head.config.dims], alone)


def test_streaming_windows_equal_one_offline_pass(tiny_model):
    model = MotionModel(tiny_model)
    audio = _speech(2.0)
    total = 45
    one = _run(model, audio, 1, total)
    twelve = _run(model, audio, 12, total)
    assert len(one) == len(twelve) == total
    for a, b in zip(one, twelve, strict=True):
        assert np.allclose(a.expression, b.expression, atol=1e-6)
        assert abs(a.head_yaw - b.head_yaw) < 1e-6 and abs(a.blink - b.blink) < 1e-6
    # ... and the batched offline sampler used for validation gives the same normalised frames.
    from avatar.motion.audio_features import clip_mel_power

    offline = sample_clips(model.net, [clip_mel_power(audio)], [total], model.start, model.settings)[0]
    yaw = model.basis.denormalise(offline)[:, SLICES.head][:, 1]
    from avatar.motion.representation import HEAD_LIMIT, TURN_GAIN

    assert np.allclose(
        np.clip(TURN_GAIN * yaw, -HEAD_LIMIT, HEAD_LIMIT), [m.head_yaw for m in one], atol=1e-5
    )


def test_overlapping_windows_return_cached_frames(tiny_model):
    model = MotionModel(tiny_model)
    audio = _speech(1.0)
    gen = LearnedMotionGenerator(seed=0, model=model)
    spf = SAMPLE_RATE // 25
    first = gen.process(AudioWindow(audio[: 12 * spf + 1280], 0, 0, 12, 25.0, 0))
    again = gen.process(AudioWindow(audio[: 14 * spf + 1280], 0, 0, 14, 25.0, 10))
    assert len(again) == 4
    assert np.allclose(again[0].expression, first[10].expression)


def test_seed_determinism(tiny_model):
    model = MotionModel(tiny_model)
    audio = _speech(1.0)
    a = _run(model, audio, 1, 20, seed=5)
    b = _run(model, audio, 1, 20, seed=5)
    c = _run(model, audio, 1, 20, seed=6)
    assert all(np.array_equal(x.expression, y.expression) for x, y in zip(a, b, strict=True))
    assert any(not np.allclose(x.expression, y.expression) for x, y in zip(a, c, strict=True))


def test_rest_vector_is_the_portrait_as_it_is():
    basis = _tiny_basis()
    motion = basis.face_motion(basis.rest_vector())
    assert np.abs(motion.expression).max() < 1e-7
    assert motion.blink == 0.0 and motion.head_yaw == 0.0 and motion.head_pitch == 0.0


def test_missing_or_mismatched_model_gives_one_line_errors(tmp_path, tiny_model):
    with pytest.raises(ConfigError, match="no motion model"):
        MotionModel(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((tiny_model / CONFIG_NAME).read_text())
    config["parts"]["head"]["hidden"] = 32  # weights are for 16
    (bad / CONFIG_NAME).write_text(json.dumps(config))
    (bad / WEIGHTS_NAME).write_bytes((tiny_model / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ConfigError, match="do not fit") as info:
        MotionModel(bad)
    assert "\n" not in str(info.value)
    (bad / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        MotionModel(bad)
    with pytest.raises(ConfigError, match="unknown motion"):
        motion_source("wiggle")


def test_engine_option_selects_motion(tiny_model):
    from avatar.engines import create_engine

    with pytest.raises(ConfigError, match="no motion model"):
        create_engine("parametric", motion="learned", motion_model="/nonexistent/motion")
    with pytest.raises(ConfigError, match="25 fps"):
        create_motion(MotionSource.LEARNED, 30.0, 0, tiny_model)
    engine = create_engine("parametric", motion="learned", motion_model=str(tiny_model))
    assert engine.motion == MotionSource.LEARNED
    rules = create_engine("parametric", motion="rules")
    assert rules.motion == MotionSource.RULES


def test_sampler_settings_are_checked():
    with pytest.raises(ConfigError, match="steps"):
        SamplerSettings(steps=0)
    with pytest.raises(ConfigError, match="guidance"):
        SamplerSettings(kind=SamplerKind.DDIM, steps=4, guidance=50.0)
