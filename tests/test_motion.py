"""Audio -> FaceMotion: mouth follows voiced sound, stays shut on silence and noise, blinks and
head motion behave, results are deterministic and independent of the window size.

All audio is synthesised here (harmonic vowels with formants, noise, espeak-ng speech if installed).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from avatar.audio.windowing import AudioRing, WindowConfig, Windower
from avatar.engine import SAMPLE_RATE, AudioWindow
from avatar.errors import ConfigError
from avatar.face.motion_types import SCALAR_FIELDS, FaceMotion
from avatar.motion.rule_features import SILENCE_DB, FeatureExtractor
from avatar.motion.rules import MotionGenerator

FPS = 25.0
VOWEL_A = (750.0, 1200.0, 2600.0)
VOWEL_I = (300.0, 2300.0, 3000.0)
VOWEL_U = (320.0, 800.0, 2400.0)


def vowel(seconds: float, f0: float = 150.0, formants=VOWEL_A, level: float = 0.2, vibrato: float = 0.0):
    """Cascade-formant vowel: harmonics of ``f0`` Hz (1/k source, optional 5 Hz vibrato of ``vibrato``
    semitones) through three second-order resonances (bandwidths 60/90/120 Hz); RMS ``level``."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = f0 * 2.0 ** (vibrato / 12.0 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    out = np.zeros_like(t)
    for k in range(1, int(7000 / f0)):
        freq = k * f0
        gain = 1.0 / k
        for centre, bandwidth in zip(formants, (60.0, 90.0, 120.0), strict=True):
            gain *= centre**2 / np.hypot(centre**2 - freq**2, freq * bandwidth)
        out += gain * np.sin(k * phase)
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades
    out *= ramp
    return (level * out / np.sqrt(np.mean(out**2))).astype(np.float32)


def silence(seconds: float, noise: float = 1e-4, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (noise * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def run(audio: np.ndarray, frames_per_window=2, hop=None, seed=0, fps=FPS, left_ms=200.0, right_ms=80.0):
    """Drive a fresh generator like the server does; return its motions, one per frame."""
    config = WindowConfig(fps, frames_per_window, hop or frames_per_window, left_ms, right_ms)
    ring, windower = AudioRing(capacity_seconds=len(audio) / SAMPLE_RATE + 2.0), Windower(config)
    ring.write(audio)
    generator = MotionGenerator(fps=fps, seed=seed)
    total = int(len(audio) / config.samples_per_frame)
    motions: list[FaceMotion] = []
    for window in windower.flush(ring, total):
        got = generator.process(window)
        assert len(got) == window.first_frame + window.num_frames - window.emit_from
        motions.extend(got)
    return motions[:total]


def track(motions: list[FaceMotion], name: str) -> np.ndarray:
    return np.array([getattr(m, name) for m in motions])


def frames(seconds: float) -> int:
    return int(round(seconds * FPS))


def bursts_audio(level: float = 0.2, noise: float = 1e-4):
    """1 s silence, then three 0.4 s vowels separated by 0.5 s silences, then 1 s silence."""
    parts, spans, t = [silence(1.0, noise)], [], 1.0
    for i, formants in enumerate((VOWEL_A, VOWEL_I, VOWEL_A)):
        parts.append(vowel(0.4, f0=140 + 20 * i, formants=formants, level=level))
        spans.append((t, t + 0.4))
        parts.append(silence(0.5 if i < 2 else 1.0, noise, seed=i + 2))
        t += 0.9
    return np.concatenate(parts), spans


def test_jaw_opens_on_vowels_and_closes_in_silence():
    audio, spans = bursts_audio()
    jaw = track(run(audio), "jaw_open")
    assert jaw[: frames(0.95)].max() < 0.02
    for (start, end), least in zip(spans, (0.3, 0.15, 0.3), strict=True):  # "a", "ee" (closer), "a"
        assert jaw[frames(start) : frames(end)].max() > least
        # Back near 0 within ~150 ms of the vowel ending.
        assert jaw[frames(end + 0.16) : frames(end + 0.4)].max() < 0.05
    assert jaw.min() >= 0.0 and jaw.max() <= 1.0


@pytest.mark.parametrize("level", [0.003, 0.03])
def test_stationary_noise_keeps_mouth_closed(level):
    rng = np.random.default_rng(5)
    white = level * rng.standard_normal(5 * SAMPLE_RATE)
    hum = np.convolve(rng.standard_normal(5 * SAMPLE_RATE), np.ones(8) / 8, mode="same")  # low-passed
    for noise in (white, level * hum / hum.std()):
        motions = run(noise.astype(np.float32))
        assert track(motions, "jaw_open").max() < 0.05


def test_noisy_microphone_still_animates_speech():
    noise = silence(4.0, noise=0.01, seed=9)
    speech = np.concatenate([vowel(0.4, level=0.1), np.zeros(8000), vowel(0.4, formants=VOWEL_I, level=0.1)])
    audio = noise.copy()
    audio[SAMPLE_RATE * 2 : SAMPLE_RATE * 2 + len(speech)] += speech.astype(np.float32)
    jaw = track(run(audio), "jaw_open")
    assert jaw[: frames(1.9)].max() < 0.05  # (the mouth may start opening ~40 ms ahead of the voice)
    assert jaw[frames(2.0) : frames(2.4)].max() > 0.3
    assert jaw[frames(3.5) :].max() < 0.05


def test_quiet_and_loud_speakers_both_animate():
    peaks = []
    for level in (0.01, 0.4):
        audio, spans = bursts_audio(level=level, noise=1e-4)
        jaw = track(run(audio), "jaw_open")
        peaks.append(np.mean([jaw[frames(a) : frames(b)].max() for a, b in spans]))
    assert min(peaks) > 0.3
    assert max(peaks) / min(peaks) < 1.6


def test_mouth_opens_most_on_the_loud_syllables():
    # Real speakers open widest on stressed syllables: a vowel 15 dB below the speaker's peaks opens the
    # jaw clearly less than the loud ones (not a constant chatter), but still visibly.
    parts, spans, t = [silence(1.0)], [], 1.0
    for i in range(6):
        parts += [vowel(0.3, level=0.2 * 10 ** (-15 / 20 * (i % 2))), silence(0.25, seed=i + 2)]
        spans.append((t, t + 0.3))
        t += 0.55
    jaw = track(run(np.concatenate(parts)), "jaw_open")
    peaks = np.array([jaw[frames(a) : frames(b) + 2].max() for a, b in spans])
    loud, quiet = peaks[0::2].mean(), peaks[1::2].mean()
    assert loud > 0.3 and quiet > 0.1
    assert quiet < 0.62 * loud


def test_singing_keeps_mouth_open_on_a_sustained_vowel():
    audio = np.concatenate([silence(0.5), vowel(2.5, f0=220, level=0.2, vibrato=0.4), silence(0.5)])
    jaw = track(run(audio), "jaw_open")
    assert jaw[frames(0.7) : frames(2.9)].min() > 0.3
    assert jaw[frames(3.2) :].max() < 0.05


def test_lip_width_spreads_on_ee_and_rounds_on_oo():
    parts = []
    for _ in range(4):
        parts += [vowel(0.35, formants=VOWEL_I), silence(0.15), vowel(0.35, formants=VOWEL_U), silence(0.15)]
    width = track(run(np.concatenate(parts)), "lip_width")
    ee = [width[frames(i + 0.1) : frames(i + 0.35)].mean() for i in range(4)]
    oo = [width[frames(i + 0.6) : frames(i + 0.85)].mean() for i in range(4)]
    assert np.mean(ee[1:]) > np.mean(oo[1:]) + 0.2
    assert np.abs(width).max() <= 1.0


def test_nasal_murmur_between_vowels_dips_the_jaw_and_presses_the_lips():
    murmur = vowel(0.1, f0=140, formants=(250.0, 1000.0, 2200.0), level=0.06)  # "m": quiet, low band
    parts = [silence(0.5)]
    for _ in range(4):
        parts += [vowel(0.3, f0=140), murmur]
    motions = run(np.concatenate(parts + [vowel(0.3, f0=140), silence(0.5)]))
    jaw, press = track(motions, "jaw_open"), track(motions, "lip_press")
    for i in range(1, 4):
        vowel_start = 0.5 + 0.4 * i
        murmur_frames = slice(frames(vowel_start + 0.3), frames(vowel_start + 0.45))
        assert (
            jaw[murmur_frames].min() < 0.6 * jaw[frames(vowel_start + 0.1) : frames(vowel_start + 0.3)].max()
        )
        assert press[murmur_frames].max() > 0.2
        assert press[frames(vowel_start + 0.1) : frames(vowel_start + 0.25)].max() < 0.1


def test_blinks_every_two_to_six_seconds():
    blink = track(run(silence(60.0)), "blink")
    closed = np.flatnonzero(blink > 0.5)
    assert len(closed) > 0
    # Group closed frames into blinks, then blinks less than 0.6 s apart into one event (double blink).
    blink_starts = closed[np.r_[True, np.diff(closed) > 1]]
    events = blink_starts[np.r_[True, np.diff(blink_starts) > frames(0.6)]]
    intervals = np.diff(events) / FPS
    assert 9 <= len(events) <= 31
    assert intervals.min() >= 1.9 and intervals.max() <= 6.5
    assert len(blink_starts) > len(events)  # at least one double blink in a minute for seed 0
    assert blink.min() >= 0.0 and blink.max() <= 1.0


def test_each_blink_lasts_100_to_150_ms_and_closes_faster_than_it_opens():
    fps = 100.0  # 10 ms frames to measure durations
    blink = track(run(silence(30.0), fps=fps), "blink")
    moving = np.flatnonzero(blink > 0.0)
    runs = np.split(moving, np.flatnonzero(np.diff(moving) > 1) + 1)
    assert len(runs) >= 5
    for frames_in_blink in runs:
        duration_ms = (len(frames_in_blink) + 1) * 10.0
        assert 90.0 <= duration_ms <= 160.0
        values = blink[frames_in_blink]
        peak = int(np.argmax(values))
        assert values.max() > 0.95
        assert peak + 1 < len(values) - peak  # closing (to the peak) is shorter than opening


def test_deterministic_with_a_seed_and_different_with_another():
    audio, _ = bursts_audio()
    audio = np.concatenate([audio, silence(8.0)])
    first, again, other = run(audio, seed=3), run(audio, seed=3), run(audio, seed=4)
    assert first == again
    for name in ("blink", "head_yaw", "breath"):
        assert np.abs(track(first, name) - track(other, name)).max() > 0.01


@pytest.mark.parametrize("frames_per_window,hop", [(1, 1), (12, 12), (4, 2), (7, 3)])
def test_same_motion_whatever_the_window_size(frames_per_window, hop):
    audio, _ = bursts_audio()
    reference = run(audio, frames_per_window=2)
    other = run(audio, frames_per_window=frames_per_window, hop=hop)
    assert len(other) == len(reference)
    fields = SCALAR_FIELDS
    diff = max(
        abs(getattr(a, f) - getattr(b, f)) for a, b in zip(reference, other, strict=True) for f in fields
    )
    assert diff < 1e-6


def test_windows_with_just_the_needed_context_give_the_same_motion():
    needed = MotionGenerator(fps=FPS).context_needed_ms()
    assert needed <= WindowConfig().right_context_ms  # fits the default look-ahead (40 ms)
    audio, _ = bursts_audio()
    reference = track(run(audio), "jaw_open")
    lean = track(run(audio, frames_per_window=3, left_ms=15.0, right_ms=np.ceil(needed)), "jaw_open")
    starved = track(run(audio, frames_per_window=3, left_ms=15.0, right_ms=0.0), "jaw_open")
    assert np.abs(lean - reference).max() < 1e-6
    assert np.abs(starved - reference).max() > 1e-3  # the context really is used


def test_interrupt_decays_smoothly_to_idle():
    speech = np.concatenate([silence(0.5)] + [vowel(0.3, f0=120 + 10 * i) for i in range(8)])
    config = WindowConfig(fps=FPS)
    ring, windower = AudioRing(capacity_seconds=5.0), Windower(config)
    ring.write(speech)
    generator = MotionGenerator(fps=FPS, seed=0)
    motions: list[FaceMotion] = []
    interrupted_at = None
    for window in windower.flush(ring, frames(2.4)):
        motions.extend(generator.process(window))
        if interrupted_at is None and len(motions) >= frames(1.2) and motions[-1].jaw_open > 0.3:
            generator.interrupt()
            interrupted_at = len(motions)
    assert interrupted_at is not None
    jaw = track(motions, "jaw_open")
    after = jaw[interrupted_at - 1 : interrupted_at + frames(0.3)]
    steps = np.diff(after)
    assert abs(steps[0]) < 0.15 and np.abs(steps).max() < 0.25  # eases out, no jump
    assert after[-1] < 0.08  # idle within ~300 ms although the voice goes on
    for name, max_step in (
        ("head_pitch", 0.02),
        ("head_yaw", 0.02),
        ("head_roll", 0.02),
        ("brow_raise", 0.06),
    ):
        values = track(motions, name)[interrupted_at - 1 : interrupted_at + frames(0.3)]
        assert np.abs(np.diff(values)).max() < max_step


def test_head_motion_small_smooth_and_alive():
    parts = [silence(2.0)]
    for i in range(12):  # phrases with rising pitch and loud onsets
        parts += [vowel(0.25, f0=110 + 15 * (i % 4), level=0.05 + 0.1 * (i % 3)), silence(0.1, seed=i + 20)]
    parts.append(silence(20.0))
    motions = run(np.concatenate(parts))
    for name in ("head_pitch", "head_yaw", "head_roll"):
        angle = track(motions, name)
        assert np.abs(angle).max() < 0.18  # at most ~10 degrees (real speakers: 5-15 degree ranges)
        assert np.abs(np.diff(angle, 2)).max() < 0.01  # no jitter
        assert angle.std() > 0.002  # but never frozen
    brow = track(motions, "brow_raise")
    assert 0.0 <= brow.min() and brow.max() <= 1.0
    assert brow[frames(2.0) : frames(6.5)].max() > brow[frames(10.0) :].max() + 0.05
    breath = track(motions, "breath")[frames(8.0) :]
    assert np.abs(breath).max() <= 1.0
    crossings = np.count_nonzero(np.diff(np.signbit(breath)))
    seconds = len(breath) / FPS
    assert 0.15 * 2 * seconds <= crossings <= 0.35 * 2 * seconds  # ~0.25 Hz cycle


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_jaw_follows_synthetic_speech_envelope(tmp_path):
    wav = tmp_path / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog. A big bear met me on a mossy bank at noon."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    from avatar.audio.io import load_audio

    audio = load_audio(wav)
    jaw = track(run(audio), "jaw_open")
    kernel = np.ones(1600) / 1600
    power = np.convolve(audio.astype(np.float64) ** 2, kernel, mode="same")
    envelope = np.sqrt(power[(np.arange(len(jaw)) * 640 + 320).astype(int)])
    best = max(np.corrcoef(jaw[lag:], envelope[: len(jaw) - lag])[0, 1] for lag in range(0, 3))
    assert best > 0.35
    assert track(run(audio), "lip_press").max() > 0.2  # bilabials and gaps close the lips


def test_bad_input_gives_clear_errors_or_finite_motion():
    with pytest.raises(ConfigError):
        MotionGenerator(fps=0)
    generator = MotionGenerator(fps=FPS)
    window = AudioWindow(np.zeros(7200, np.float32), -3200, 0, 2, 30.0, 0)
    with pytest.raises(ConfigError):
        generator.process(window)
    broken = np.full(7200, np.nan, np.float32)
    motions = generator.process(AudioWindow(broken, -3200, 0, 2, FPS, 0))
    motions += generator.process(AudioWindow(np.zeros(7200, np.float32), -1920, 2, 2, FPS, 2))
    assert len(motions) == 4
    assert all(np.isfinite(getattr(m, f)) for m in motions for f in SCALAR_FIELDS)


def test_repeated_window_returns_the_same_frames_and_late_start_works():
    audio = vowel(1.0)
    generator = MotionGenerator(fps=FPS)
    # A session that starts at frame 100 (timeline sample 64000); windows like the Windower cuts them.
    start = 100 * 640
    padded = np.concatenate([np.zeros(3200, np.float32), audio, np.zeros(1280, np.float32)])

    def window(first: int, emit_from: int) -> AudioWindow:
        lo = (first - 100) * 640
        return AudioWindow(padded[lo : lo + 3200 + 1280 + 1280], start + lo - 3200, first, 2, FPS, emit_from)

    first = generator.process(window(100, 100))
    second = generator.process(window(102, 102))
    again = generator.process(window(102, 102))
    assert len(first) == len(second) == len(again) == 2
    assert again == second and again[0] is not second[0]
    assert max(m.jaw_open for m in first + second) > 0.0


@pytest.mark.parametrize("f0", [90.0, 150.0, 260.0])
def test_features_find_pitch_voicing_and_spectral_shape(f0):
    extractor = FeatureExtractor(FPS)
    window = AudioWindow(vowel(0.5, f0=f0, formants=VOWEL_I), 0, 0, 12, FPS, 0)
    voiced = extractor.subframes_of(window, 5, 10)
    assert all(abs(f.f0_hz - f0) < 0.03 * f0 and f.periodicity > 0.8 for f in voiced)
    rounded = extractor.subframes_of(
        AudioWindow(vowel(0.5, f0=f0, formants=VOWEL_U), 0, 0, 12, FPS, 0), 5, 10
    )
    f2_proxy = [np.mean([f.band_db[2] - f.band_db[1] for f in fs]) for fs in (voiced, rounded)]
    assert f2_proxy[0] > f2_proxy[1] + 6.0  # "ee" has far more 1-2.5 kHz energy than "oo"
    noise = AudioWindow(silence(0.5, noise=0.05), 0, 0, 12, FPS, 0)
    assert all(f.periodicity < 0.5 and f.f0_hz == 0.0 for f in extractor.subframes_of(noise, 5, 10))
    quiet = extractor.subframe(AudioWindow(np.zeros(8000, np.float32), 0, 0, 12, FPS, 0), 5)
    assert quiet.energy_db == SILENCE_DB and quiet.periodicity == 0.0
