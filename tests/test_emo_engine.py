"""EmoEngine: refuses untrained weights, loads a checkpoint, streams server-style windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.audio.windowing import AudioRing, WindowConfig, Windower
from avatar.emo.checkpoint import build_pipeline, save_checkpoint
from avatar.emo.engine import EmoEngine
from avatar.emo.testing import micro_config, randomize_zero_layers, speech_like
from avatar.engines import create_engine
from avatar.errors import ConfigError, PortraitError

torch.set_num_threads(1)  # tiny models: one thread is fastest on the shared 2-core box
ASTRONAUT = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = micro_config()
    pipe = build_pipeline(cfg, seed=0)
    randomize_zero_layers(pipe)
    root = tmp_path_factory.mktemp("emo")
    save_checkpoint(pipe, root / "trained", training_steps=10)
    save_checkpoint(pipe, root / "untrained", training_steps=0)
    return cfg, root


@pytest.fixture(scope="module")
def engine_and_avatar(checkpoint):
    cfg, root = checkpoint
    engine = EmoEngine(size=128, config=cfg, checkpoint=root / "trained", seed=0)
    return engine, engine.prepare(ASTRONAUT)


def test_refuses_to_start_without_trained_weights(checkpoint):
    cfg, root = checkpoint
    with pytest.raises(ConfigError, match="no trained checkpoint.*train"):
        create_engine("emo", fps=25, size=128, seed=0, config="tiny")
    with pytest.raises(ConfigError, match="untrained"):
        EmoEngine(size=128, config=cfg, checkpoint=root / "untrained")
    with pytest.raises(ConfigError, match="not found"):
        EmoEngine(size=128, config=cfg, checkpoint=root / "missing")
    other = micro_config().with_overrides(audio_projection={"token_dim": 8})
    with pytest.raises(ConfigError, match="does not fit"):
        EmoEngine(size=128, config=other, checkpoint=root / "trained")
    assert EmoEngine(size=128, config=cfg, checkpoint=root / "untrained", allow_untrained=True)


def _windows(audio, config):
    ring, windower = AudioRing(5.0), Windower(config)
    ring.write(audio)
    total = int(len(audio) / 16000 * config.fps)
    yield from windower.ready(ring)
    yield from windower.flush(ring, total)


@pytest.mark.parametrize("geometry", [dict(frames_per_window=2, hop=2), dict(frames_per_window=6, hop=4)])
def test_streams_server_windows_in_order(engine_and_avatar, geometry):
    engine, avatar = engine_and_avatar
    assert avatar.image.shape == (128, 128, 3)
    session = engine.new_session(avatar, seed=3)
    config = WindowConfig(fps=25.0, left_context_ms=80, right_context_ms=80, **geometry)
    frames = []
    for window in _windows(speech_like(0.64), config):
        out = session.process(window)
        assert [f.index for f in out] == list(range(window.emit_from, window.first_frame + window.num_frames))
        frames.extend(out)
    assert [f.index for f in frames] == list(range(len(frames))) and len(frames) >= 16
    region = avatar.data.region
    for f in frames:
        assert f.image.shape == (128, 128, 3) and f.image.dtype == np.uint8
        outside = np.ones((128, 128), bool)
        outside[region.y0 : region.y0 + region.side, region.x0 : region.x0 + region.side] = False
        assert np.array_equal(f.image[outside], avatar.image[outside])
    inner = slice(region.y0 + region.side // 3, region.y0 + 2 * region.side // 3)
    assert not np.array_equal(frames[0].image[inner], avatar.image[inner])
    session.close()


def test_same_seed_same_frames_and_preferred_window(checkpoint, engine_and_avatar):
    cfg, _ = checkpoint
    engine, avatar = engine_and_avatar
    config = WindowConfig(fps=25.0, frames_per_window=6, hop=6, left_context_ms=80, right_context_ms=80)
    runs = []
    for _ in range(2):
        session = engine.new_session(avatar, seed=7)
        runs.append([f.image for w in _windows(speech_like(0.48), config) for f in session.process(w)])
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))
    pw = engine.preferred_window
    assert pw["frames_per_window"] == cfg.window.frames and pw["right_context_ms"] == pytest.approx(80.0)


def test_crossfade_session_emits_each_frame_once(checkpoint):
    cfg, root = checkpoint
    cfg2 = micro_config(crossfade_frames=2)
    engine = EmoEngine(size=128, config=cfg2, checkpoint=root / "trained")
    session = engine.new_session(engine.prepare(ASTRONAUT), seed=0)
    config = WindowConfig(fps=25.0, frames_per_window=4, hop=4, left_context_ms=160, right_context_ms=80)
    indices = [f.index for w in _windows(speech_like(0.48), config) for f in session.process(w)]
    assert indices == list(range(12))


def test_portrait_without_face_is_a_portrait_error(engine_and_avatar):
    engine, _ = engine_and_avatar
    blank = np.full((200, 200, 3), 90, np.uint8)
    blank[50:150, 50:150] = (30, 160, 40)
    with pytest.raises(PortraitError):
        engine.prepare(blank)


def test_head_and_shoulders_framing_reaches_the_face_region(checkpoint, engine_and_avatar):
    """The portrait is cropped before the face is located: the generated region covers the framed face."""
    cfg, root = checkpoint
    full_engine, full = engine_and_avatar
    engine = EmoEngine(size=128, config=cfg, checkpoint=root / "trained", seed=0,
                       framing="head_and_shoulders")
    framed = engine.prepare(ASTRONAUT)
    assert not np.array_equal(framed.image, full.image)
    assert framed.data.region.side > 1.8 * full.data.region.side
    per_call = full_engine.prepare(ASTRONAUT, framing="head_and_shoulders")
    assert per_call.data.region.side == framed.data.region.side
    config = WindowConfig(fps=25.0, frames_per_window=6, hop=6, left_context_ms=80, right_context_ms=80)
    frame = engine.new_session(framed, seed=0).process(next(_windows(speech_like(0.48), config)))[0]
    region = framed.data.region
    outside = np.ones((128, 128), bool)
    outside[region.y0 : region.y0 + region.side, region.x0 : region.x0 + region.side] = False
    assert np.array_equal(frame.image[outside], framed.image[outside])  # it streams the framed portrait


def test_sampler_override_and_bad_sampler(checkpoint):
    cfg, root = checkpoint
    engine = EmoEngine(
        size=128, config=micro_config(), checkpoint=root / "trained", scheduler="ddim", steps=3
    )
    assert type(engine.pipeline.scheduler).__name__ == "DDIMScheduler"
    assert engine.config.sampler.steps == 3
    bad_options = [
        ("sampler.scheduler", {"scheduler": "euler"}),
        ("sampler.steps", {"steps": 0}),
        ("sampler.steps", {"steps": "two"}),
        ("sampler.audio_guidance", {"audio_guidance": 0.5}),
    ]
    config = micro_config()
    before = config.sampler
    for key, bad in bad_options:
        with pytest.raises(ConfigError, match=key):
            EmoEngine(size=128, config=config, checkpoint=root / "trained", **bad)
    assert config.sampler == before  # a refused override changes nothing


def test_mouth_region_with_parametric_head_motion():
    """face.composite=parametric: the generated region is pasted in, then the parametric engine moves the
    head and blinks, so pixels outside the generated region change over time too."""
    face = {"crop_scale": 0.56, "crop_shift": 0.28, "composite": "parametric"}
    cfg = micro_config().with_overrides(face=face)
    pipe = build_pipeline(cfg, seed=0)
    randomize_zero_layers(pipe)
    pipe.training_steps = 1
    engine = EmoEngine(size=128, config=cfg, pipeline=pipe, seed=0)
    avatar = engine.prepare(ASTRONAUT)
    region, rig = avatar.data.region, avatar.data.rig
    assert rig is not None
    x0, y0, x1, y1 = rig.face_box
    longer = max(x1 - x0, y1 - y0)
    mouth = (rig.landmarks[13] + rig.landmarks[14]) / 2
    assert region.x0 <= mouth[0] < region.x0 + region.side and region.y0 <= mouth[1] < region.y0 + region.side
    assert region.side == pytest.approx(0.56 * longer, abs=1.5)
    session = engine.new_session(avatar, seed=1)
    config = WindowConfig(fps=25.0, frames_per_window=6, hop=6, left_context_ms=80, right_context_ms=80)
    frames = [f for w in _windows(speech_like(2.0), config) for f in session.process(w)]
    assert [f.index for f in frames] == list(range(len(frames))) and len(frames) >= 48
    outside = np.ones((128, 128), bool)
    outside[region.y0 : region.y0 + region.side, region.x0 : region.x0 + region.side] = False
    changed = [np.abs(f.image.astype(int) - avatar.image.astype(int))[outside].mean() for f in frames]
    assert max(changed) > 0.2  # the head moves (the still composite leaves these pixels untouched)
    session.interrupt()
    session.close()
