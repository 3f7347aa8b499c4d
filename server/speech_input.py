"""Speak mode inputs: decoding pushed audio, the per-session request rate limit, and the speech queue.

Everything returns or holds 16 kHz mono float32 (``avatar.engine.SAMPLE_RATE``). Bad input raises
``SignallingError`` with a one-line reason that goes back to the client.
"""

from __future__ import annotations

import base64
import binascii
import collections
import io
import wave
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from avatar.engine import SAMPLE_RATE
from server.clock import Clock, MonotonicClock
from server.signalling import SignallingError

MIN_RATE, MAX_RATE = 8000, 48000
"""Short codes people type, mapped to espeak-ng voice names when the engine lists only the long ones."""


def resolve_voice(voice: str, available: list[str]) -> str:
    """``voice`` if the engine has it (case-insensitive); unknown voices raise ``SignallingError``."""
    by_lower = {name.lower(): name for name in available}
    if voice.lower() in by_lower:
        return by_lower[voice.lower()]
    shown = voice if len(voice) <= 20 else voice[:20] + "..."
    raise SignallingError(f"unknown voice {shown!r}; use a language code such as en, es, de, fr, zh")


def check_pushed_audio(
    fmt: str, data: str, sample_rate: int | None, max_seconds: float, max_bytes: int
) -> None:
    """The checks that need no decoding (constant time, safe on the event loop): the decoded size from
    the base64 length (``max_bytes``), and for ``pcm16`` the sample rate and the duration."""
    size = len(data) * 3 // 4 - data[-2:].count("=")
    if size > max_bytes:
        raise SignallingError(
            f"audio too large: {size / 1e6:.3g} MB decoded (at most {max_bytes / 1e6:.3g} MB)"
        )
    if fmt == "pcm16":
        rate = int(sample_rate or 0)
        _check_rate(rate)
        seconds = size / 2 / rate
        if seconds > max_seconds:
            raise SignallingError(f"audio too long: {seconds:.1f} s (at most {max_seconds:g} s)")


def decode_pushed_audio(
    fmt: str, data: str, sample_rate: int | None, max_seconds: float, max_bytes: int
) -> np.ndarray:
    """base64 ``wav`` or ``pcm16`` (little-endian mono at ``sample_rate``) -> 16 kHz mono float32, shape (n,).

    Limits: decoded size ``max_bytes``, duration ``max_seconds``, sample rate 8000..48000 Hz. CPU-bound:
    run it in a worker thread, after ``check_pushed_audio`` and the rate limit.
    """
    check_pushed_audio(fmt, data, sample_rate, max_seconds, max_bytes)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SignallingError("audio 'data' is not valid base64") from None
    if fmt == "wav":
        pcm, rate = _read_wav(raw)
    else:
        _check_rate(int(sample_rate or 0))
        if len(raw) % 2:
            raise SignallingError("pcm16 audio must have an even number of bytes (16-bit samples)")
        pcm, rate = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, int(sample_rate or 0)
    _check_rate(rate)
    if pcm.size == 0:
        raise SignallingError("audio is empty")
    seconds = pcm.size / rate
    if seconds > max_seconds:
        raise SignallingError(f"audio too long: {seconds:.1f} s (at most {max_seconds:g} s)")
    return resample_to_16k(pcm, rate)


def _check_rate(rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise SignallingError(f"audio sample rate must be {MIN_RATE}..{MAX_RATE} Hz, got {rate}")


def _read_wav(raw: bytes) -> tuple[np.ndarray, int]:
    """8/16/32-bit integer PCM WAV bytes -> mono float32 in [-1, 1) and its sample rate."""
    try:
        with wave.open(io.BytesIO(raw)) as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, ValueError) as exc:
        raise SignallingError(f"audio is not a readable PCM WAV file ({exc})") from None
    kinds = {1: ("u1", 128.0, 128.0), 2: ("<i2", 0.0, 32768.0), 4: ("<i4", 0.0, 2.0**31)}
    if width not in kinds:
        raise SignallingError(f"WAV audio must be 8, 16 or 32-bit PCM, got {8 * width}-bit")
    dtype, offset, scale = kinds[width]
    usable = len(frames) // (width * channels) * width * channels
    samples = (np.frombuffer(frames[:usable], dtype=dtype).astype(np.float32) - offset) / scale
    return samples.reshape(-1, channels).mean(axis=1).astype(np.float32), rate


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling of mono float32 audio from ``rate`` Hz to 16 kHz."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(samples, dtype=np.float32)
    g = gcd(rate, SAMPLE_RATE)
    out = resample_poly(samples, SAMPLE_RATE // g, rate // g)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


class RateLimiter:
    """At most ``max_events`` accepted events per sliding ``window_s`` seconds."""

    def __init__(self, max_events: int, window_s: float, clock: Clock | None = None) -> None:
        self.max_events = int(max_events)
        self.window_s = float(window_s)
        self.clock = clock or MonotonicClock()
        self._times: collections.deque[float] = collections.deque()

    def check(self, what: str = "requests") -> float:
        """Count one event, or raise ``SignallingError`` (not counted) when over the limit. Returns the
        event's time stamp, for ``refund``."""
        now = self.clock.now()
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.max_events:
            wait = self.window_s - (now - self._times[0])
            raise SignallingError(
                f"too many {what}: at most {self.max_events} per {self.window_s:g} s;"
                f" try again in {wait:.1f} s"
            )
        self._times.append(now)
        return now

    def refund(self, stamp: float) -> None:
        """Uncount the event ``check`` stamped (a request that failed before it was accepted)."""
        try:
            self._times.remove(stamp)
        except ValueError:
            pass  # already out of the window


class SpeechQueue:
    """Speech waiting to enter the session timeline, taken in order a few milliseconds at a time."""

    def __init__(self) -> None:
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._offset = 0  # samples of the first chunk already taken
        self.queued_samples = 0

    def add(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self._chunks.append(samples)
            self.queued_samples += samples.size

    def take(self, n: int) -> tuple[np.ndarray, int]:
        """``n`` samples: queued speech first, then zeros; and how many of them were speech."""
        out = np.zeros(max(0, n), dtype=np.float32)
        filled = 0
        while filled < n and self._chunks:
            chunk = self._chunks[0]
            count = min(n - filled, chunk.size - self._offset)
            out[filled : filled + count] = chunk[self._offset : self._offset + count]
            filled += count
            self._offset += count
            if self._offset >= chunk.size:
                self._chunks.popleft()
                self._offset = 0
        self.queued_samples -= filled
        return out, filled

    def clear(self) -> int:
        """Drop everything queued; returns the number of samples dropped."""
        dropped = self.queued_samples
        self._chunks.clear()
        self._offset = 0
        self.queued_samples = 0
        return dropped
