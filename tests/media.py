"""Test media the project makes itself (no third-party files): speech-like audio and WAV writing."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "avatar" / "assets"
ASTRONAUT = ASSETS / "astronaut.png"


def vowel_bursts(seconds: float, rate: int = 16000, burst_s: float = 0.3, gap_s: float = 0.2,
                 lead_silence_s: float = 0.5, f0: float = 140.0) -> np.ndarray:
    """Harmonic 'vowel' bursts (f0 with formant-like emphasis) separated by silence, float32 mono."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    voice = np.zeros(n)
    for k in range(1, 30):
        f = f0 * k
        gain = 1.0 / k + 0.8 * np.exp(-((f - 700) / 200) ** 2) + 0.5 * np.exp(-((f - 1200) / 250) ** 2)
        voice += gain * np.sin(2 * np.pi * f * t)
    period = burst_s + gap_s
    phase = (t - lead_silence_s) % period
    gate = ((t >= lead_silence_s) & (phase < burst_s)).astype(float)
    ramp = np.minimum(1.0, np.minimum(phase, burst_s - phase).clip(0) / 0.02)
    out = voice * gate * ramp
    return (0.5 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    """Write float32 audio in [-1, 1] as 16-bit PCM WAV (duplicated to ``channels``)."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def espeak_wav(path: Path, text: str, voice: str = "en") -> Path | None:
    """Speak ``text`` with espeak-ng into ``path`` (22.05 kHz WAV); None when espeak-ng is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    subprocess.run([exe, "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path
