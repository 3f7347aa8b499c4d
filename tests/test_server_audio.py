"""Inbound audio: resampling to 16 kHz mono, VAD gating, window timing/overlap, silence padding."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from avatar.audio.windowing import WindowConfig
from server.audio_input import AudioInput, MonoResampler
from tests.media import vowel_bursts


def _frames(audio: np.ndarray, rate: int, channels: int, ptime: float = 0.02):
    """Split float audio (n,) into PyAV s16 frames of ``ptime`` (duplicated to ``channels``)."""
    step = int(rate * ptime)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    layout = "stereo" if channels == 2 else "mono"
    for start in range(0, len(pcm) - step + 1, step):
        chunk = np.repeat(pcm[start : start + step, None], channels, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = fractions.Fraction(1, rate)
        yield frame


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    ("rate", "channels", "tone"), [(48000, 2, 440.0), (48000, 1, 1000.0), (44100, 2, 700.0)]
)
def test_resampler_gives_16k_mono_and_keeps_pitch(rate, channels, tone):
    seconds = 2.0
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.5 * np.sin(2 * np.pi * tone * t)
    resample = MonoResampler()
    out = np.concatenate([resample(f) for f in _frames(audio, rate, channels)])
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - seconds * 16000) <= 0.01 * seconds * 16000
    assert abs(_peak_hz(out[1000:], 16000) - tone) < 3.0
    assert 0.3 < np.abs(out[1000:]).max() <= 0.51  # mono mix of identical channels keeps the level


def _feed(inp: AudioInput, audio16: np.ndarray) -> list:
    windows = []
    for start in range(0, len(audio16), 320):
        windows += inp.push_samples(audio16[start : start + 320])
    return windows


def test_vad_gates_speech_against_silence_and_faint_noise(fake_clock):
    rng = np.random.default_rng(0)
    window = WindowConfig(fps=25, frames_per_window=2, hop=2)
    speech = vowel_bursts(3.0, 16000, lead_silence_s=0.0, burst_s=0.4, gap_s=0.05)
    faint_noise = (0.002 * rng.standard_normal(32000)).astype(np.float32)
    quiet = np.concatenate([np.zeros(16000, np.float32), faint_noise])
    for audio, expect_speech in [(speech, True), (quiet, False)]:
        inp = AudioInput(window, vad_aggressiveness=2, clock=fake_clock)
        windows = _feed(inp, audio)
        mean_speech = np.mean([w.speech for w in windows])
        if expect_speech:
            assert mean_speech > 0.5 and inp.is_speaking()
        else:
            assert mean_speech == 0.0 and not inp.is_speaking()


def test_windows_have_timeline_timestamps_and_overlap(fake_clock):
    cfg = WindowConfig(fps=25, frames_per_window=4, hop=2, left_context_ms=200, right_context_ms=80)
    inp = AudioInput(cfg, clock=fake_clock)
    audio = np.sin(np.arange(16000) / 5.0).astype(np.float32) * 0.3
    windows = _feed(inp, audio)
    assert [w.first_frame for w in windows] == list(range(0, 2 * len(windows), 2))
    assert windows[0].emit_from == 0
    assert all(w.emit_from == w.first_frame + 2 for w in windows[1:])  # overlapping: only new frames
    for w in windows:
        assert w.start_sample == w.first_frame * 640 - 3200  # 200 ms left context
        assert len(w.samples) == 3200 + 4 * 640 + 1280  # left + own + 80 ms look-ahead
        # a window is cut only once its look-ahead has arrived
        assert (w.first_frame + 4) * 640 + 1280 <= 16000
        own = w.samples[3200 : 3200 + 640]
        np.testing.assert_allclose(own, audio[w.first_frame * 640 : w.first_frame * 640 + 640], atol=1e-4)
    # every frame of the timeline that had enough audio is emitted exactly once
    emitted = [f for w in windows for f in range(w.emit_from, w.first_frame + w.num_frames)]
    assert emitted == list(range(len(emitted)))


def test_silence_padding_keeps_timeline_moving_without_audio(fake_clock):
    cfg = WindowConfig(fps=25, frames_per_window=2, hop=2)
    inp = AudioInput(cfg, max_gap_ms=200, clock=fake_clock)
    assert inp.pad_silence() == []  # nothing is missing yet
    windows = []
    for _ in range(100):  # 2 s of 20 ms ticks with no audio at all
        fake_clock.advance(0.02)
        windows += inp.pad_silence()
    # the ring trails the wall clock by max_gap, steadily
    assert inp.ring.end == pytest.approx(1.8 * 16000, abs=1)
    assert inp.padded_samples == inp.ring.end and inp.received_samples == 0
    frames = [f for w in windows for f in range(w.emit_from, w.first_frame + w.num_frames)]
    assert frames == list(range(len(frames))) and len(frames) >= 40
    assert all(w.speech == 0.0 for w in windows)


def test_no_padding_while_real_audio_arrives_and_padding_after_a_stall(fake_clock):
    cfg = WindowConfig(fps=25, frames_per_window=2, hop=2)
    inp = AudioInput(cfg, max_gap_ms=200, clock=fake_clock)
    tone = (0.3 * np.sin(np.arange(320) / 3.0)).astype(np.float32)
    for _ in range(50):  # 1 s of packets arriving in real time, with jitter up to 100 ms
        fake_clock.advance(0.02)
        inp.push_samples(tone)
        assert inp.pad_silence() == []
    fake_clock.advance(0.1)
    assert inp.pad_silence() == []  # a 100 ms hiccup is below max_gap
    assert inp.padded_samples == 0 and inp.received_samples == 50 * 320
    fake_clock.advance(0.5)  # now 600 ms without audio: pad up to max_gap behind
    inp.pad_silence()
    assert inp.padded_samples == pytest.approx(0.4 * 16000, abs=2)
    end_before = inp.ring.end
    inp.push_samples(tone)  # audio resumes and is appended after the padding
    assert inp.ring.end == end_before + 320
    np.testing.assert_allclose(inp.ring.read(end_before, end_before + 320), tone)
