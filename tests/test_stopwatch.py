"""avatar/stopwatch.py and the engines' ``EngineSession.stage_timings()``."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar.engine import AudioWindow
from avatar.stopwatch import Stopwatch
from tests.media import vowel_bursts

ASTRONAUT = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_laps_and_stages_add_up_per_name():
    clock = FakeClock()
    watch = Stopwatch(clock)
    clock.now = 0.010
    assert watch.lap("audio") == pytest.approx(10.0)
    clock.now = 0.015
    watch.lap("unet")
    clock.now = 0.022
    watch.lap("unet")
    with watch.stage("decode"):
        clock.now = 0.030
    clock.now = 0.031
    watch.lap("composite")  # laps continue from the end of the stage block
    assert watch.totals() == pytest.approx({"audio": 10.0, "unet": 12.0, "decode": 8.0, "composite": 1.0})
    assert list(watch.totals()) == ["audio", "unet", "decode", "composite"]
    assert watch.counts() == {"audio": 1, "unet": 2, "decode": 1, "composite": 1}
    assert watch.means()["unet"] == pytest.approx(6.0)


def test_stage_is_charged_when_the_block_raises_and_reset_forgets():
    clock = FakeClock()
    watch = Stopwatch(clock)
    with pytest.raises(ValueError), watch.stage("broken"):
        clock.now = 0.002
        raise ValueError("boom")
    assert watch.totals() == pytest.approx({"broken": 2.0})
    clock.now = 0.005
    watch.reset()
    assert watch.totals() == {} and len(watch) == 0
    clock.now = 0.006
    assert watch.lap("after") == pytest.approx(1.0)  # reset restarted the lap interval


def test_merge_adds_totals_and_counts_and_sync_runs_before_each_reading():
    clock, synced = FakeClock(), []
    a = Stopwatch(clock, sync=lambda: synced.append(clock.now))
    b = Stopwatch(clock)
    clock.now = 0.001
    a.lap("x")
    b.lap("x")
    b.lap("y")
    a.merge(b)
    a.merge({"z": 4.0})
    assert a.totals() == pytest.approx({"x": 2.0, "y": 0.0, "z": 4.0})
    assert a.counts() == {"x": 2, "y": 1, "z": 1}
    assert synced == [0.0, 0.001]  # construction and the lap


def _window(frames: int = 4, fps: float = 25.0) -> AudioWindow:
    samples = vowel_bursts(frames / fps + 0.16, lead_silence_s=0.0)
    return AudioWindow(samples, -1280, 0, frames, fps, 0, speech=1.0)


def test_parametric_session_reports_its_stages():
    from avatar.engines import create_engine

    engine = create_engine("parametric", fps=25, size=192, seed=0, motion="rules")
    session = engine.new_session(engine.prepare(ASTRONAUT), seed=0)
    frames = session.process(_window())
    timings = session.stage_timings()
    assert set(timings) == {"motion", "render"} and all(ms >= 0 for ms in timings.values())
    assert session._stopwatch.counts()["render"] == len(frames) == 4
    session.process(_window(2))
    assert session._stopwatch.counts()["render"] == 2  # the latest call only


def test_emo_session_reports_its_stages():
    import torch

    from avatar.emo.engine import EmoEngine
    from avatar.emo.testing import make_pipeline

    torch.set_num_threads(1)
    pipe = make_pipeline(trained_like=True)
    pipe.training_steps = 1
    engine = EmoEngine(size=128, config=pipe.config, pipeline=pipe, seed=0)
    session = engine.new_session(engine.prepare(ASTRONAUT), seed=0)
    session.process(_window(6))
    timings = session.stage_timings()
    assert {"audio", "motion_frames", "prepare", "unet", "decode", "composite"} <= set(timings)
    assert session.stopwatch.counts()["unet"] == pipe.config.sampler.steps
    assert all(ms >= 0 for ms in timings.values()) and timings["unet"] > 0
