"""Streaming audio -> ``FaceMotion`` for the parametric engine (numpy only, causal, seeded).

Audio is consumed per 20 ms sub-frame (see ``features.py``), strictly in timeline order:

1. Levels: a noise floor (minimum over the last 3 s of unvoiced or steady sub-frames, so stationary
   noise and hum are ignored), a speech peak above it (instant attack, 3 dB/s decay: an AGC), and
   loudness ``(level - floor - 6 dB) / (peak - floor - 9 dB)`` in 0..1.
2. Mouth targets, language independent: ``jaw = gain * loudness**2.7 * voicing term * shape`` where
   ``shape`` rises with the F2 band (1-2.5 kHz) over the F1 band (0.3-1 kHz) (low = rounded lips,
   small aperture), with the share of 2.5-7.6 kHz energy, and slightly with an F1 proxy, each scored
   against the speaker's running statistics. Lip width follows the same F2 proxy (spread "ee" vs
   rounded "oo"). Lip press rises in short gaps inside speech and on nasal murmurs (voiced, energy
   concentrated below 300 Hz, quieter than the last syllable peak), which also close the jaw a bit.
3. Co-articulation: critically damped springs, faster when opening (45 rad/s) than closing (30).
4. Prosody: syllable onsets (fast minus slow loudness envelope) push a short nod and raise the
   brows; pitch above the speaker's running mean lifts the head and the brows.

Frame ``f`` samples the springs once the audio up to ``lookahead_ms`` (60 ms) past its instant
``f / fps`` was consumed, i.e. 20 ms past the end of its own 40 ms of audio (the mouth moves
slightly ahead of the sound, as real speakers do), and adds time-only motion: seeded blinks,
breathing and head sway. All state advances per sub-frame or per frame, so results do not depend
on how the audio is cut into windows, provided each window has ``context_needed_ms()`` (34 ms at
25 fps; the default is 80) of right context and 15 ms of left context (samples missing from a
window read as zeros).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from avatar.engine import SAMPLE_RATE, AudioWindow
from avatar.errors import ConfigError
from avatar.face.motion_types import FaceMotion
from avatar.motion.rule_features import FeatureExtractor, SubframeFeatures

MAX_HEAD_ANGLE = 0.2
"""Hard limit on every head angle (radians, ~11 degrees)."""


def spring_step(x: float, v: float, target: float, omega: float, dt: float) -> tuple[float, float]:
    """Exact step of a critically damped spring (natural frequency ``omega`` rad/s) over ``dt`` s."""
    c1 = x - target
    c2 = v + omega * c1
    decay = math.exp(-omega * dt)
    return target + (c1 + c2 * dt) * decay, (c2 - omega * (c1 + c2 * dt)) * decay


def one_pole(y: float, x: float, tau: float, dt: float) -> float:
    """First-order low-pass step with time constant ``tau`` seconds."""
    return y + (x - y) * (1.0 - math.exp(-dt / tau))


@dataclass
class MotionTuning:
    """Constants of the audio-driven model (times in s, levels in dB, spring rates in rad/s).

    Defaults were tuned with ``benchmarks/tune_motion.py`` (real footage + multilingual speech).
    """

    lookahead_ms: float = 60.0  # frame f is emitted once the audio up to f / fps + this was consumed
    floor_window_s: float = 3.0  # noise floor = minimum over this long
    floor_default_db: float = -65.0  # floor assumed until the first unvoiced sub-frame
    floor_min_db: float = -70.0  # the floor never goes below (digital silence)
    steady_window_s: float = 1.0  # a voiced signal this steady counts as background (hum, music)
    steady_range_db: float = 3.0
    snr_gate_db: float = 6.0  # nothing opens below floor + gate
    peak_min_db: float = 24.0  # AGC: the speech peak stays at least this far above the floor
    peak_init_db: float = 32.0
    peak_decay_db_s: float = 3.0
    jaw_gain: float = 0.7
    loud_power: float = 2.7  # > 1 expands: quiet stretches open the mouth less (mouths open most on peaks)
    vowel_floor: float = 0.65  # jaw factor for unvoiced, non-sonorant sound (1 for vowels)
    open_weight: float = 0.05  # shape weights (F1 proxy, F2-vs-F1 proxy, high-band share)
    tilt_weight: float = 0.6
    hf_weight: float = 0.35
    shape_min: float = 0.4  # the spectral shape scales the jaw by at least this much
    murmur_close: float = 0.1  # how much a nasal murmur closes the jaw
    murmur_offset_db: float = 4.0  # murmur: low-band share this far above the speaker's mean...
    murmur_range_db: float = 8.0  # ...reaching full strength this much further
    local_peak_decay_db_s: float = 40.0  # recent syllable peak, for the murmur's level dip
    dip_offset_db: float = 3.0
    jaw_omega_open: float = 45.0
    jaw_omega_close: float = 30.0  # back to ~0 within ~150 ms of the voice ending
    jaw_omega_interrupt: float = 15.0  # slower ease-out after interrupt()
    lip_omega: float = 25.0
    stats_tau: float = 2.0  # running spectral statistics of the speaker
    activity_tau: float = 0.6  # release of the "talking" state (livelier head while it lasts)
    gap_tau: float = 0.2  # pauses shorter than ~2 gap_tau inside speech press the lips
    onset_threshold: float = 0.25  # fast minus slow loudness envelope that counts as an emphasis
    onset_refractory_s: float = 0.25
    nod_kick: float = 0.07  # nod target (rad) set by a full-strength onset; the head dips ~2 deg
    nod_omega: float = 9.0
    head_omega: float = 5.0
    brow_omega: float = 9.0
    interrupt_s: float = 0.4  # audio ignored after interrupt() while the face eases to idle


class _RunningStat:
    """Exponentially weighted mean and variance (time constant ``tau`` s, per-sample weights)."""

    def __init__(self, mean: float, std: float, tau: float, dt: float) -> None:
        self.mean, self.var = mean, std * std
        self.rate = 1.0 - math.exp(-dt / tau)

    def update(self, x: float, weight: float) -> None:
        a = self.rate * weight
        self.mean += a * (x - self.mean)
        self.var += a * ((x - self.mean) ** 2 - self.var)

    def score(self, x: float, spread: float = 3.0) -> float:
        """``x`` mapped to 0..1 around the mean (0.5 at the mean, 0/1 at -/+ spread/2 std)."""
        return _clip(0.5 + (x - self.mean) / (spread * math.sqrt(self.var) + 1e-6), 0.0, 1.0)


class _SpeechState:
    """Trackers and springs driven by audio sub-frames (everything that depends on the voice)."""

    def __init__(self, tuning: MotionTuning, dt: float) -> None:
        self.t = tuning
        self.dt = dt
        n_floor = max(1, round(tuning.floor_window_s / dt))
        self.floor_buf = np.full(n_floor, np.inf)
        self.steady_buf = np.zeros(max(2, round(tuning.steady_window_s / dt)))
        self.pos = 0
        self.floor = tuning.floor_default_db
        self.peak = tuning.floor_default_db + tuning.peak_init_db  # dBFS
        # Spectral-shape statistics over speech sub-frames (dB differences between bands).
        self.low_gap = _RunningStat(12.0, 5.0, tuning.stats_tau, dt)  # level - low band: small in murmurs
        self.f1 = _RunningStat(3.0, 6.0, tuning.stats_tau, dt)  # F1 band - low band
        self.f2 = _RunningStat(-6.0, 6.0, tuning.stats_tau, dt)  # F2 band - F1 band
        self.hf = _RunningStat(-15.0, 6.0, tuning.stats_tau, dt)  # frication band - level
        self.pitch = _RunningStat(0.0, 3.0, tuning.stats_tau, dt)  # semitones re 100 Hz
        self.has_pitch = False
        self.env_fast = self.env_slow = 0.0
        self.activity = 0.0  # 0..1, fast rise when talking, ~0.6 s release
        self.recent_voice = 0.0  # like activity with a short release: lips press in brief pauses
        self.liveliness = 0.0  # activity smoothed over ~0.7 s: scales head sway and breathing
        self.since_onset = 1e9
        self.jaw = self.jaw_v = 0.0
        self.width = self.width_v = 0.0
        self.press = self.press_v = 0.0
        self.nod = self.nod_v = 0.0  # radians, + nods down
        self.nod_push = 0.0  # decaying nod target (radians)
        self.lift = self.lift_v = 0.0
        self.brow = self.brow_v = 0.0
        self.brow_kick = 0.0
        self.lift_target = 0.0
        self.local_peak = tuning.floor_default_db  # dBFS, recent syllable peak
        self.muted = 0  # sub-frames left of interrupt decay

    def interrupt(self) -> None:
        self.muted = max(1, round(self.t.interrupt_s / self.dt))
        self.env_fast = self.env_slow = 0.0
        self.brow_kick = self.nod_push = self.lift_target = 0.0

    def _update_levels(self, feat: SubframeFeatures) -> float:
        """Update floor and peak with one sub-frame; return its normalised loudness 0..1."""
        t, level = self.t, feat.energy_db
        self.steady_buf[self.pos % len(self.steady_buf)] = level
        self.pos += 1
        recent = self.steady_buf
        steady = self.pos >= len(recent) and float(recent.max() - recent.min()) < t.steady_range_db
        voiced = feat.periodicity >= 0.5
        self.floor_buf[self.pos % len(self.floor_buf)] = level if (not voiced or steady) else np.inf
        lowest = float(self.floor_buf.min())
        if lowest < np.inf:
            self.floor = lowest
        floor = max(self.floor, t.floor_min_db)
        self.peak = max(level, self.peak - t.peak_decay_db_s * self.dt, floor + t.peak_min_db)
        span = max(self.peak - floor - t.snr_gate_db - 3.0, 6.0)
        return _clip((level - floor - t.snr_gate_db) / span, 0.0, 1.0)

    def step(self, feat: SubframeFeatures) -> None:
        """Advance every tracker and spring by one sub-frame."""
        t = self.t
        if self.muted > 0:
            self.muted -= 1
            self._articulate(0.0, 0.0, 0.0, t.jaw_omega_interrupt)
            return
        loud = self._update_levels(feat)
        voicing = _clip((feat.periodicity - 0.35) / 0.4, 0.0, 1.0)
        b0, b1, b2, b3 = feat.band_db.tolist()
        sonorant = _clip((max(b0, b1, b2) - b3 + 3.0) / 12.0, 0.0, 1.0)
        jaw_target = (
            t.jaw_gain
            * loud**t.loud_power
            * (t.vowel_floor + (1.0 - t.vowel_floor) * max(voicing, 0.6 * sonorant))
        )
        jaw_target *= self._aperture(feat, loud, voicing)
        width_target = 0.8 * (2.0 * self.f2.score(b2 - b1) - 1.0) * min(1.0, 2.0 * loud) * voicing
        gap = self._update_activity(loud)
        murmur = self._murmur(feat, loud, voicing)
        jaw_target *= 1.0 - t.murmur_close * murmur
        self._prosody(loud, feat.f0_hz, voicing)
        self._articulate(jaw_target, width_target, min(1.0, 0.6 * gap + 0.8 * murmur), None)

    def _aperture(self, feat: SubframeFeatures, loud: float, voicing: float) -> float:
        """Jaw factor (``shape_min``..1.8) from the spectral shape, scored against the speaker's stats."""
        t = self.t
        b0, b1, b2, b3 = feat.band_db.tolist()
        f1, f2, high = b1 - b0, b2 - b1, b3 - feat.energy_db
        speech = 1.0 if loud > 0.2 else 0.0
        self.low_gap.update(feat.energy_db - b0, speech * voicing)
        self.f1.update(f1, speech * voicing)
        self.f2.update(f2, speech * voicing)
        self.hf.update(high, speech)
        shape = 1.0 + t.open_weight * (2.0 * self.f1.score(f1) - 1.0)
        shape += t.tilt_weight * (2.0 * self.f2.score(f2) - 1.0)
        shape += t.hf_weight * (2.0 * self.hf.score(high) - 1.0)
        return _clip(shape, t.shape_min, 1.8)

    def _update_activity(self, loud: float) -> float:
        """Update the talking trackers; return how much this sub-frame is a short pause in speech."""
        t, dt = self.t, self.dt
        talking = 1.0 if loud > 0.15 else 0.0
        tau = 0.05 if talking > self.activity else t.activity_tau
        self.activity = one_pole(self.activity, talking, tau, dt)
        self.liveliness = one_pole(self.liveliness, self.activity, 0.7, dt)
        tau = 0.02 if talking > self.recent_voice else t.gap_tau
        self.recent_voice = one_pole(self.recent_voice, talking, tau, dt)
        return self.recent_voice * max(0.0, 1.0 - loud / 0.15)

    def _murmur(self, feat: SubframeFeatures, loud: float, voicing: float) -> float:
        """0..1: voiced, energy unusually concentrated below 300 Hz, and quieter than the last peak."""
        t = self.t
        low_gap = feat.energy_db - float(feat.band_db[0])  # small when the low band dominates
        depth = (self.low_gap.mean - low_gap - t.murmur_offset_db) / t.murmur_range_db
        self.local_peak = max(feat.energy_db, self.local_peak - t.local_peak_decay_db_s * self.dt)
        dip = _clip((self.local_peak - feat.energy_db - t.dip_offset_db) / 6.0, 0.0, 1.0)
        return voicing * (loud > 0.05) * _clip(depth, 0.0, 1.0) * dip

    def _prosody(self, loud: float, f0: float, voicing: float) -> None:
        t, dt = self.t, self.dt
        self.env_fast = one_pole(self.env_fast, loud, 0.03, dt)
        self.env_slow = one_pole(self.env_slow, loud, 0.3, dt)
        self.since_onset += dt
        onset = self.env_fast - self.env_slow
        if onset > t.onset_threshold and self.since_onset > t.onset_refractory_s:
            self.since_onset = 0.0
            self.nod_push = max(self.nod_push, t.nod_kick * min(1.0, onset / 0.5))
            self.brow_kick = min(1.0, onset / 0.5)
        self.brow_kick = one_pole(self.brow_kick, 0.0, 0.25, dt)
        self.nod_push = one_pole(self.nod_push, 0.0, 0.15, dt)
        rise = 0.0
        if f0 > 0.0 and loud > 0.2:
            semitones = 12.0 * math.log2(f0 / 100.0)
            if not self.has_pitch:
                self.pitch.mean, self.has_pitch = semitones, True
            self.pitch.update(semitones, voicing)
            rise = _clip((semitones - self.pitch.mean) / 6.0, -1.0, 1.0)
        self.lift_target = rise * voicing * min(1.0, 2.0 * loud)

    def _articulate(self, jaw: float, width: float, press: float, jaw_omega: float | None) -> None:
        t, dt = self.t, self.dt
        if jaw_omega is None:
            jaw_omega = t.jaw_omega_open if jaw > self.jaw else t.jaw_omega_close
        self.jaw, self.jaw_v = spring_step(self.jaw, self.jaw_v, jaw, jaw_omega, dt)
        self.width, self.width_v = spring_step(self.width, self.width_v, width, t.lip_omega, dt)
        self.press, self.press_v = spring_step(self.press, self.press_v, press, t.lip_omega * 1.5, dt)
        self.nod, self.nod_v = spring_step(self.nod, self.nod_v, self.nod_push, t.nod_omega, dt)
        self.lift, self.lift_v = spring_step(self.lift, self.lift_v, self.lift_target, t.head_omega, dt)
        brow_target = 0.5 * max(0.0, self.lift_target) + 0.5 * self.brow_kick
        self.brow, self.brow_v = spring_step(self.brow, self.brow_v, brow_target, t.brow_omega, dt)


class _BlinkSchedule:
    """Seeded blink times on the frame grid: every 2-6 s, 100-150 ms each, sometimes double."""

    def __init__(self, rng: np.random.Generator, fps: float) -> None:
        self.rng = rng
        self.fps = fps
        self.blinks: list[tuple[float, float, float, float]] = []  # (peak, close, hold, open) s
        self.next_time = self._interval() * 0.6

    def _interval(self) -> float:
        return float(np.clip(self.rng.lognormal(math.log(3.4), 0.35), 2.0, 6.0))

    def _schedule_until(self, time: float) -> None:
        while self.next_time < time + 1.0:
            peak = math.ceil(self.next_time * self.fps) / self.fps
            self.blinks.append(self._shape(peak))
            if self.rng.random() < 0.15:  # double blink
                peak = math.ceil((peak + 0.3) * self.fps) / self.fps
                self.blinks.append(self._shape(peak))
            self.next_time = peak + self._interval()

    def _shape(self, peak: float) -> tuple[float, float, float, float]:
        """(peak time, closing, fully closed, opening) in seconds: 100-145 ms in all."""
        close, hold, opening = self.rng.uniform((0.04, 0.0, 0.06), (0.05, 0.015, 0.08))
        return peak, float(close), float(hold), float(opening)

    def value(self, time: float) -> float:
        """Eyelid closure 0..1 at ``time`` seconds."""
        self._schedule_until(time)
        self.blinks = [b for b in self.blinks if b[0] + b[2] + b[3] > time - 1.0]
        out = 0.0
        for peak, close, hold, opening in self.blinks:
            rel = time - peak
            if -close < rel <= 0.0:
                out = max(out, _smoothstep((rel + close) / close))
            elif 0.0 < rel <= hold:
                out = 1.0
            elif hold < rel < hold + opening:
                out = max(out, 1.0 - _smoothstep((rel - hold) / opening))
        return out


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


class IdleMotion:
    """Time-only motion: slow head sway (sums of seeded sinusoids) and a ~0.25 Hz breath."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.freqs = rng.uniform(0.05, 0.35, size=(3, 3))  # (axis, component) Hz
        self.phases = rng.uniform(0.0, 2.0 * math.pi, size=(3, 3))
        self.weights = np.array([0.5, 0.3, 0.2])
        self.breath_phase = float(rng.uniform(0.0, 2.0 * math.pi))
        self.breath_wobble = float(rng.uniform(0.0, 2.0 * math.pi))

    def sway(self, time: float) -> np.ndarray:
        """(pitch, yaw, roll), each in about -1..1 (smooth noise)."""
        return (np.sin(2.0 * math.pi * self.freqs * time + self.phases) @ self.weights) / 0.7

    def breath(self, time: float) -> float:
        phase = 2.0 * math.pi * 0.25 * time + self.breath_phase
        phase += 0.4 * math.sin(2.0 * math.pi * 0.04 * time + self.breath_wobble)
        return math.sin(phase)


class MotionGenerator:
    """Turns audio windows into one ``FaceMotion`` per video frame (see the module docstring)."""

    def __init__(self, fps: float = 25.0, seed: int = 0, tuning: MotionTuning | None = None) -> None:
        if not fps > 0:
            raise ConfigError(f"motion fps must be positive, got {fps!r}")
        self.fps = float(fps)
        self.tuning = tuning or MotionTuning()
        self.features = FeatureExtractor(self.fps)
        self._sub_dt = 1.0 / (self.fps * self.features.subframes)
        self._ahead = round(self.tuning.lookahead_ms / 1000.0 / self._sub_dt)  # sub-frames past f / fps
        self._speech = _SpeechState(self.tuning, self._sub_dt)
        rng = np.random.default_rng(seed)
        self._idle = IdleMotion(rng)
        self._blinks = _BlinkSchedule(np.random.default_rng([seed, 1]), self.fps)
        self._next_frame: int | None = None
        self._next_sub = 0
        self._recent: OrderedDict[int, FaceMotion] = OrderedDict()

    def context_needed_ms(self) -> float:
        """Right context (ms past a window's last frame) needed for window-size independent results."""
        beyond_frame = max(0.0, self._ahead * self._sub_dt - 1.0 / self.fps)
        return 1000.0 * beyond_frame + 1000.0 * self.features.reach_samples / SAMPLE_RATE

    def process(self, window: AudioWindow) -> list[FaceMotion]:
        """One FaceMotion per frame in [emit_from, first_frame + num_frames), in order."""
        if abs(window.fps - self.fps) > 1e-6:
            raise ConfigError(
                f"audio window is at {window.fps:g} fps but the motion generator at {self.fps:g} fps"
            )
        out: list[FaceMotion] = []
        subs = self.features.subframes
        stop = window.first_frame + window.num_frames
        new_from = window.emit_from if self._next_frame is None else max(window.emit_from, self._next_frame)
        if new_from < stop:
            first_sub = max(self._next_sub, new_from * subs)
            last_sub = (stop - 1) * subs + self._ahead - 1
            pending = iter(self.features.subframes_of(window, first_sub, last_sub + 1 - first_sub))
            self._next_sub = first_sub
        for frame in range(window.emit_from, stop):
            if frame < new_from:
                cached = self._recent.get(frame)
                out.append(replace(cached) if cached is not None else self._compose(frame))
                continue
            while self._next_sub < frame * subs + self._ahead:
                self._speech.step(next(pending))
                self._next_sub += 1
            motion = self._compose(frame)
            self._recent[frame] = replace(motion)
            while len(self._recent) > 32:
                self._recent.popitem(last=False)
            self._next_frame = frame + 1
            out.append(motion)
        return out

    def interrupt(self) -> None:
        """Speech state decays to idle smoothly from the current pose (no jump)."""
        self._speech.interrupt()

    def _compose(self, frame: int) -> FaceMotion:
        time = frame / self.fps
        s = self._speech
        sway = self._idle.sway(time) * (0.03 + 0.035 * s.liveliness)
        limit = MAX_HEAD_ANGLE
        return FaceMotion(
            jaw_open=_clip(s.jaw, 0.0, 1.0),
            lip_width=_clip(s.width, -1.0, 1.0),
            lip_press=_clip(s.press, 0.0, 1.0),
            blink=self._blinks.value(time),
            brow_raise=_clip(s.brow, 0.0, 1.0),
            head_pitch=_clip(float(sway[0]) + s.nod - 0.03 * s.lift, -limit, limit),
            head_yaw=_clip(float(sway[1]), -limit, limit),
            head_roll=_clip(float(sway[2]) + 0.015 * s.lift, -limit, limit),
            breath=(1.0 - 0.5 * s.liveliness) * self._idle.breath(time),
        )
