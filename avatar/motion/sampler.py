"""Few-step sampling of motion frames (numpy), offline over whole clips and streaming per frame.

Frame ``f`` is generated once, from its own 480 ms of audio (``audio_features``: 60 ms of look-ahead
past its instant) and the last ``n`` generated frames (the motion frames), with noise drawn from a
generator keyed by ``(seed, f)``. So a stream cut into any windows gives exactly the frames of one
offline pass: there is nothing to cross-fade, and overlapping windows return the cached frames.

Samplers (``SamplerKind``):

* ``ddim``: the teacher, ``steps`` deterministic DDIM steps on the v-prediction, with classifier-free
  guidance on audio ``v = v(no audio) + w (v(audio) - v(no audio))`` (two passes per step);
* ``consistency``: the distilled student, ``x0 = f(noise, 1)`` then, per extra step at time ``t_k``,
  ``x0 = f(alpha_k x0 + sigma_k e_k, t_k)``; one pass per step, guidance baked in by distillation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import numpy as np

from avatar.errors import ConfigError
from avatar.motion.audio_features import (
    AHEAD_HOPS,
    CONTEXT_HOPS,
    N_MELS,
    PAST_HOPS,
    frame_context,
    frame_hops,
    log_mel,
    mel_power,
)
from avatar.motion.network import MotionNets, schedule
from avatar.motion.representation import SLICES

MAX_GUIDANCE = 10.0
NORMALISED_LIMIT = 6.0
"""Generated normalised values are clipped to this many units (a guard against a runaway frame)."""


class SamplerKind(StrEnum):
    DDIM = "ddim"
    CONSISTENCY = "consistency"


@dataclass(frozen=True)
class SamplerSettings:
    kind: SamplerKind = SamplerKind.CONSISTENCY
    steps: int = 2
    guidance: float = 1.0
    """Audio guidance weight w on the mouth and brows (``ddim`` only; 1 = plain conditional). Head, eyes
    and gaze always sample plainly: guiding them exaggerates the head far beyond real speakers."""
    mouth_temperature: float = 1.0
    """Scale of the mouth and brow noise (1 = the learned distribution; lower moves towards the mean
    shape for the voice: less random mouth motion, closer lip sync)."""
    head_temperature: float = 1.0
    """Scale of the head pose's noise (the few-step student turns the head more than its teacher; this
    brings it back to the real speakers' range). Blinks and gaze always sample at 1: lower, they stop."""
    times: tuple[float, ...] = field(default=(1.0, 0.5, 0.25, 0.12))
    """Consistency sampling times (the first ``steps`` are used)."""

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 100:
            raise ConfigError(f"motion sampler steps must be an integer 1..100, got {self.steps!r}")
        if self.kind == SamplerKind.CONSISTENCY and self.steps > len(self.times):
            raise ConfigError(f"consistency sampling takes at most {len(self.times)} steps")
        if not 0.0 <= float(self.guidance) <= MAX_GUIDANCE:
            raise ConfigError(
                f"motion audio guidance must be in [0, {MAX_GUIDANCE:g}], got {self.guidance!r}"
            )
        for name in ("mouth_temperature", "head_temperature"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"motion {name} must be in [0, 1], got {getattr(self, name)!r}")

    def noise_scale(self, dim: int) -> np.ndarray:
        """Per-value noise scale (dim,): ``mouth_temperature`` on the mouth and brows, ``head_temperature``
        on the head pose, 1 on blinks and gaze."""
        scale = np.ones(dim, np.float32)
        scale[SLICES.head] = self.head_temperature
        scale[SLICES.mouth] = self.mouth_temperature
        scale[SLICES.brows] = self.mouth_temperature
        return scale

    def guidance_weights(self, dim: int) -> np.ndarray:
        """Per-value guidance (dim,): ``guidance`` on the mouth and brows, 1 elsewhere."""
        weights = np.ones(dim, np.float32)
        weights[SLICES.mouth] = self.guidance
        weights[SLICES.brows] = self.guidance
        return weights


NOISE_CORRELATION = 0.9
"""Frame-to-frame correlation of the sampling noise (an AR(1) process in time): neighbouring frames start
from similar noise, so the deterministic samplers move smoothly instead of jittering frame to frame. Each
frame's noise is still standard normal, as in training."""


def frame_noise(
    seed: int,
    frame: int,
    steps: int,
    dim: int,
    previous: np.ndarray | None,
    correlation: float = NOISE_CORRELATION,
) -> np.ndarray:
    """Noise (steps, dim) of frame ``frame`` given the previous frame's (None at frame 0): the same
    however the stream is cut into windows, since frames are generated once, in order."""
    fresh = np.random.default_rng([seed, 7, frame]).standard_normal((steps, dim)).astype(np.float32)
    if previous is None:
        return fresh
    return (correlation * previous + np.sqrt(1.0 - correlation**2) * fresh).astype(np.float32)


def denoise(
    net: MotionNets, mel: np.ndarray, context: np.ndarray, noise: np.ndarray, settings: SamplerSettings
) -> np.ndarray:
    """Normalised motion (B, D) for log-mel (B, 48, 40), motion frames (B, n, D), noise (B, steps, D)."""
    batch = context.shape[0]
    noise = noise * settings.noise_scale(noise.shape[-1])
    cond = net.condition(mel, context)
    if settings.kind == SamplerKind.CONSISTENCY:
        x0 = net.x0(noise[:, 0], np.ones(batch, np.float32), cond)
        for k in range(1, settings.steps):
            t = np.full(batch, settings.times[k], np.float32)
            alpha, sigma = schedule(t)
            x0 = net.x0(alpha[:, None] * x0 + sigma[:, None] * noise[:, k], t, cond)
        return np.clip(x0, -NORMALISED_LIMIT, NORMALISED_LIMIT)
    guided = settings.guidance != 1.0
    null = net.condition(None, context) if guided else None
    weights = settings.guidance_weights(noise.shape[-1])
    x = noise[:, 0]
    grid = np.linspace(1.0, 0.0, settings.steps + 1, dtype=np.float32)
    for t_now, t_next in zip(grid[:-1], grid[1:], strict=True):
        t = np.full(batch, t_now, np.float32)
        v = net.velocity(x, t, cond)
        if guided:
            v_null = net.velocity(x, t, null)
            v = v_null + weights * (v - v_null)
        alpha, sigma = schedule(t_now)
        x0 = alpha * x - sigma * v
        eps = sigma * x + alpha * v
        alpha_n, sigma_n = schedule(t_next)
        x = alpha_n * x0 + sigma_n * eps
    return np.clip(x, -NORMALISED_LIMIT, NORMALISED_LIMIT)


RECENTER_SECONDS = 4.0
"""Time constant of the head's re-centring: the running mean of the generated head pose (over about this
long) is taken out of it, as the training clips' own mean pose was. Without it the autoregressive head
can wander off to one side over minutes."""


class HeadRecentring:
    """Running mean (B, 5) of the head pose's deviation from rest, subtracted from each new frame."""

    def __init__(self, start: np.ndarray, batch: int, fps: float) -> None:
        self.start = start[SLICES.head].astype(np.float32)
        self.mean = np.zeros((batch, len(self.start)), np.float32)
        self.rate = np.float32(1.0 / (RECENTER_SECONDS * fps))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalised frames (B, D) with the head's running mean taken out (a copy)."""
        out = x.copy()
        self.mean += self.rate * (x[:, SLICES.head] - self.start - self.mean)
        out[:, SLICES.head] -= self.mean
        return out


def sample_clips(
    net: MotionNets,
    mel_powers: list[np.ndarray],
    frames: list[int],
    start: np.ndarray,
    settings: SamplerSettings,
    seed: int = 0,
    fps: float = 25.0,
) -> list[np.ndarray]:
    """Offline autoregressive sampling of several clips at once (batched over clips).

    ``mel_powers``: per clip (hops, 40) on the 10 ms grid; ``frames``: frames per clip; ``start``: the
    normalised vector (D,) the motion frames hold before frame 0 (the rest face). Returns per clip
    (frames, D) normalised motion.
    """
    n, dim = net.context_frames, net.motion_dim
    total = max(frames)
    history = np.repeat(np.repeat(start[None, None], n, axis=1), len(frames), axis=0).astype(np.float32)
    outs = np.zeros((len(frames), total, dim), np.float32)
    steps = settings.steps
    noise = None
    recentre = HeadRecentring(start, len(frames), fps)
    voice = net.voice
    means = [voice.running_means(log_mel(m), voice.start()) for m in mel_powers] if voice else []
    for f in range(total):
        mel = log_mel(np.stack([frame_context(m, f, fps) for m in mel_powers]))
        if voice is not None:
            last = frame_hops(f, fps) + AHEAD_HOPS  # the mean after the window's last hop
            mel = voice.apply(
                mel, np.stack([m[min(last, len(m) - 1)] if len(m) else voice.prior for m in means])
            )
        noise = frame_noise(seed, f, steps, dim, noise)  # the same for every clip, as in a stream
        x = recentre(denoise(net, mel, history, np.broadcast_to(noise, (len(frames), steps, dim)), settings))
        outs[:, f] = x
        history = np.concatenate([history[:, 1:], x[:, None]], axis=1)
    return [outs[i, :count] for i, count in enumerate(frames)]


class TimelineAudio:
    """Audio addressed by absolute timeline sample, kept for the last ``seconds``; unknown reads as 0."""

    def __init__(self, seconds: float = 2.0, rate: int = 16000) -> None:
        self.capacity = int(seconds * rate)
        self.buf = np.zeros(self.capacity, np.float32)
        self.known_from = 0  # samples before this were dropped or never written
        self.end = 0
        self.mute_from = self.mute_to = 0

    def put(self, start: int, samples: np.ndarray) -> None:
        stop = start + len(samples)
        if stop <= self.end - self.capacity:
            return
        if stop > self.end:
            new_from = max(self.end, stop - self.capacity)
            idx = np.arange(new_from, stop) % self.capacity
            self.buf[idx] = 0.0
            self.end = stop
        lo = max(start, self.end - self.capacity)
        self.buf[np.arange(lo, stop) % self.capacity] = samples[lo - start :]

    def mute(self, start: int, stop: int) -> None:
        """Read samples [start, stop) as silence (after an interrupt)."""
        self.mute_from, self.mute_to = start, stop

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros(stop - start, np.float32)
        lo, hi = max(start, self.end - self.capacity, 0), min(stop, self.end)
        if hi > lo:
            out[lo - start : hi - start] = self.buf[np.arange(lo, hi) % self.capacity]
        m_lo, m_hi = max(start, self.mute_from), min(stop, self.mute_to)
        if m_hi > m_lo:
            out[m_lo - start : m_hi - start] = 0.0
        return out


class StreamingSampler:
    """Per-session state: audio seen so far, the motion frames, and the frames already generated."""

    def __init__(
        self,
        net: MotionNets,
        start: np.ndarray,
        settings: SamplerSettings,
        seed: int,
        fps: float = 25.0,
        denoiser: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """``denoiser``: ``(mel, context, noise) -> motion`` in place of ``denoise`` with ``net`` and
        ``settings`` (e.g. a ``batching.DenoiseBatcher`` shared by the sessions of a process)."""
        self.net, self.settings, self.seed, self.fps = net, settings, int(seed), float(fps)
        self._denoise = denoiser or partial(denoise, net, settings=settings)
        self.audio = TimelineAudio()
        self.history = np.repeat(start[None].astype(np.float32), net.context_frames, axis=0)
        self.next_frame = 0
        self._noise: np.ndarray | None = None
        self._recentre = HeadRecentring(start, 1, self.fps)
        self._mel_cache: dict[int, np.ndarray] = {}
        self._voice = net.voice.start() if net.voice else None
        self._voice_hop = -1  # the last hop the voice mean has taken in
        self._voice_mean = net.voice.prior if net.voice else None

    def feed(self, start_sample: int, samples: np.ndarray) -> None:
        self.audio.put(start_sample, samples)

    def _mel(self, frame: int) -> np.ndarray:
        first = frame_hops(frame, self.fps) - PAST_HOPS
        for h in range(first, min(0, first + CONTEXT_HOPS)):  # before the timeline: zeros, as in training
            self._mel_cache.setdefault(h, np.zeros(N_MELS, np.float32))
        missing = [h for h in range(first, first + CONTEXT_HOPS) if h not in self._mel_cache]
        if missing:
            rows = mel_power(self.audio.read, missing[0], missing[-1] - missing[0] + 1)
            for k, h in enumerate(range(missing[0], missing[-1] + 1)):
                self._mel_cache[h] = rows[k]
            self._follow_voice(missing[0], rows)
        for h in [h for h in self._mel_cache if h < first]:
            del self._mel_cache[h]
        return np.stack([self._mel_cache[h] for h in range(first, first + CONTEXT_HOPS)])

    def _follow_voice(self, first_hop: int, rows: np.ndarray) -> None:
        """Take hops ``first_hop ..`` (mel power rows) into the voice mean, each hop once, in order."""
        if self._voice is None:
            return
        new = rows[max(self._voice_hop + 1 - first_hop, 0) :]
        if len(new):
            self._voice_mean = self.net.voice.running_means(log_mel(new), self._voice)[-1]
            self._voice_hop = first_hop + len(rows) - 1

    def step(self) -> np.ndarray:
        """Generate frame ``next_frame`` (its audio must have been fed); returns normalised (D,)."""
        f = self.next_frame
        self._noise = frame_noise(self.seed, f, self.settings.steps, self.net.motion_dim, self._noise)
        mel = log_mel(self._mel(f))[None]
        if self.net.voice is not None:
            mel = self.net.voice.apply(mel, self._voice_mean)
        x = self._recentre(self._denoise(mel, self.history[None], self._noise[None]))[0]
        self.history = np.concatenate([self.history[1:], x[None]], axis=0)
        self.next_frame = f + 1
        return x

    def forget_audio_after(self, sample: int, seconds: float = 0.4) -> None:
        """Interrupt: the next ``seconds`` of audio read as silence, and cached features past it go."""
        self.audio.mute(sample, sample + int(seconds * 16000))
        self._mel_cache.clear()
