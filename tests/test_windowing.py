"""Ring buffer, windower and VAD: the timeline shared by the server and the offline renderer."""

import numpy as np
import pytest

from avatar.audio.vad import VoiceActivity
from avatar.audio.windowing import AudioRing, WindowConfig, Windower
from avatar.engine import SAMPLE_RATE


def test_ring_reads_by_absolute_index_and_wraps():
    ring = AudioRing(capacity_seconds=0.1)  # 1600 samples
    data = np.arange(5000, dtype=np.float32)
    for chunk in np.array_split(data, 7):
        ring.write(chunk)
    assert ring.end == 5000
    np.testing.assert_array_equal(ring.read(4000, 4010), data[4000:4010])
    assert not ring.read(100, 110).any()  # overwritten: reads as zeros
    out = ring.read(4995, 5005)
    np.testing.assert_array_equal(out[:5], data[4995:])
    assert not out[5:].any()  # not yet written


def test_ring_single_write_longer_than_capacity_keeps_timeline():
    ring = AudioRing(capacity_seconds=0.1)
    data = np.arange(4000, dtype=np.float32)
    ring.write(data)
    assert ring.end == 4000
    np.testing.assert_array_equal(ring.read(3000, 4000), data[3000:])


def test_ring_pad_to_fills_gap_with_silence():
    ring = AudioRing(capacity_seconds=1)
    ring.write(np.ones(100, dtype=np.float32))
    ring.pad_to(400)
    ring.write(np.ones(10, dtype=np.float32))
    assert ring.end == 410
    assert not ring.read(100, 400).any()
    assert ring.read(400, 410).all()


def test_windows_have_sample_accurate_timestamps_and_contexts():
    config = WindowConfig(fps=25, frames_per_window=2, hop=2, left_context_ms=200, right_context_ms=80)
    ring = AudioRing(capacity_seconds=5)
    ring.write(np.arange(SAMPLE_RATE, dtype=np.float32))  # 1 s = 25 frames
    windows = list(Windower(config).ready(ring))
    # The last window must have 80 ms (1280 samples) look-ahead inside the written second.
    assert windows[-1].first_frame + 2 <= 25 - 2
    for k, w in enumerate(windows):
        assert w.first_frame == 2 * k and w.emit_from == 2 * k
        assert w.start_sample == 640 * w.first_frame - 3200
        assert len(w.samples) == 3200 + 2 * 640 + 1280
        lo, hi = w.frame_span(w.first_frame)
        if w.start_sample >= 0:
            # samples carry their own timeline index in this test
            assert w.samples[lo] == 640 * w.first_frame
            assert hi - lo == 640


def test_overlapping_windows_emit_each_frame_once():
    config = WindowConfig(fps=25, frames_per_window=12, hop=8, right_context_ms=80)
    ring = AudioRing(capacity_seconds=10)
    ring.write(np.zeros(4 * SAMPLE_RATE, dtype=np.float32))
    windower = Windower(config)
    windows = list(windower.ready(ring)) + list(windower.flush(ring, total_frames=100))
    emitted = [f for w in windows for f in range(w.emit_from, w.first_frame + w.num_frames)]
    assert emitted[:100] == list(range(100))
    assert all(w.emit_from - w.first_frame in (0, 4) for w in windows)
    assert windows[1].first_frame == 8 and windows[1].emit_from == 12


def test_window_config_rejects_bad_hop():
    with pytest.raises(ValueError):
        WindowConfig(frames_per_window=2, hop=3)


def _vowel(seconds: float, f0: float = 140.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def test_vad_marks_voiced_audio_and_not_silence():
    vad = VoiceActivity(aggressiveness=2)
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    vad.feed(silence)
    vad.feed(_vowel(1.0))
    vad.feed(silence)
    assert vad.speech_fraction(0, SAMPLE_RATE) == 0.0
    assert vad.speech_fraction(SAMPLE_RATE + 1600, 2 * SAMPLE_RATE - 1600) > 0.8
    assert vad.speech_fraction(2 * SAMPLE_RATE + 3200, 3 * SAMPLE_RATE) < 0.2


def test_vad_ignores_faint_noise():
    rng = np.random.default_rng(0)
    vad = VoiceActivity()
    vad.feed((rng.standard_normal(SAMPLE_RATE) * 0.001).astype(np.float32))
    assert vad.speech_fraction(0, SAMPLE_RATE) == 0.0
    assert not vad.is_speaking()


def test_windows_carry_at_least_the_engines_lookahead():
    """``at_least`` raises the right context to an engine's look-ahead (whole ms), never lowers it; the
    parametric engine asks for its motion's ``context_needed_ms`` (learned 32.5 -> 33 ms at 25 fps)."""
    from avatar.engines import create_engine

    config = WindowConfig(fps=25, right_context_ms=40)
    assert config.at_least(32.5) is config
    assert config.at_least(54.2).right_context_ms == 55.0
    assert WindowConfig(fps=25, right_context_ms=80).at_least(33).right_context_ms == 80.0
    for motion in ("learned", "rules"):
        engine = create_engine("parametric", fps=25, size=256, motion=motion)
        assert 20.0 < engine.lookahead_ms <= WindowConfig().right_context_ms  # the default suffices
    fast_rules = create_engine("parametric", fps=50, size=256, motion="rules")
    assert fast_rules.lookahead_ms > WindowConfig().right_context_ms  # so the session raises it


def test_server_windows_carry_just_the_engines_lookahead_unless_configured_more():
    """The shipped configuration adds no look-ahead of its own (``window.right_context_ms`` 0): a session's
    windows (as ``Session`` builds them) carry what the engine reads, and an operator's larger value wins."""
    from avatar.engines import create_engine
    from server.config import load_config

    engine = create_engine("parametric", fps=25, size=256, motion="learned")
    default = load_config().window_config(engine.preferred_window).at_least(engine.lookahead_ms)
    assert default.right_context_ms == 33.0
    more = load_config(flags={"window.right_context_ms": 80})
    assert more.window_config(engine.preferred_window).at_least(engine.lookahead_ms).right_context_ms == 80.0
