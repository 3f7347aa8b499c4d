"""Media the browser tests make themselves: a loopable 48 kHz speech WAV and a mouth box finder."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import av
import numpy as np

SPEECH_TEXT = (
    "Hello there. I am a talking portrait, and my lips follow your voice. "
    "Papa made a big blue balloon, and we all sang along."
)


def vowel_bursts(seconds: float, rate: int, f0: float = 130.0, burst_s: float = 0.28,
                 gap_s: float = 0.14) -> np.ndarray:
    """Synthetic speech-like signal: harmonic 'vowels' with formant peaks, gated into syllables.

    Returns float32 mono in [-0.5, 0.5], shape (round(seconds * rate),).
    """
    t = np.arange(round(seconds * rate)) / rate
    voice = np.zeros_like(t)
    for k in range(1, 25):
        f = f0 * k
        formants = np.exp(-(((f - 750) / 180) ** 2)) + 0.6 * np.exp(-(((f - 1250) / 250) ** 2))
        voice += (1.0 / k + formants) * np.sin(2 * np.pi * f * t)
    phase = t % (burst_s + gap_s)
    envelope = np.clip(np.minimum(phase, burst_s - phase) / 0.03, 0.0, 1.0)
    out = voice * envelope
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def _decode_mono(path: Path, rate: int) -> np.ndarray:
    """Decode any audio file to float32 mono at ``rate`` Hz with PyAV's resampler."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def write_wav_s16(path: Path, audio: np.ndarray, rate: int) -> Path:
    """Write float32 mono audio in [-1, 1] as a 16-bit PCM mono WAV."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def speech_wav_48k(path: Path, lead_silence_s: float = 1.0, tail_silence_s: float = 0.4) -> Path:
    """A 48 kHz mono 16-bit WAV: ``lead_silence_s`` of silence, then speech, then a short tail.

    Speech comes from espeak-ng when installed, else :func:`vowel_bursts` (4 s). Both ends are silent,
    so the file loops without a click (Chromium's fake microphone plays it in a loop).
    """
    rate = 48000
    espeak = shutil.which("espeak-ng")
    speech = None
    if espeak is not None:
        raw = path.with_suffix(".espeak.wav")
        result = subprocess.run([espeak, "-s", "150", "-w", str(raw), SPEECH_TEXT], capture_output=True)
        if result.returncode == 0 and raw.exists():
            speech = _decode_mono(raw, rate)
            speech *= 0.7 / max(1e-6, float(np.abs(speech).max()))
    if speech is None:
        speech = vowel_bursts(4.0, rate)
    silence = np.zeros(round(lead_silence_s * rate), np.float32)
    tail = np.zeros(round(tail_silence_s * rate), np.float32)
    return write_wav_s16(path, np.concatenate([silence, speech, tail]), rate)


def mouth_box(image: np.ndarray, margin: float = 0.35) -> tuple[int, int, int, int] | None:
    """Lip bounding box ``(x0, y0, x1, y1)`` in pixels of an RGB uint8 image, from MediaPipe's face mesh.

    The box is widened by ``margin`` of the lip width on each side and extended downwards by one lip
    width, so an opening jaw stays inside it. None when no face is found.
    """
    import mediapipe as mp  # heavy import, only for the tests that need it

    height, width = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        return None
    landmarks = result.multi_face_landmarks[0].landmark
    lips = {i for edge in mp.solutions.face_mesh.FACEMESH_LIPS for i in edge}
    xs = np.array([landmarks[i].x * width for i in lips])
    ys = np.array([landmarks[i].y * height for i in lips])
    lip_width = xs.max() - xs.min()
    x0 = int(max(0, xs.min() - margin * lip_width))
    x1 = int(min(width, xs.max() + margin * lip_width))
    y0 = int(max(0, ys.min() - margin * lip_width))
    y1 = int(min(height, ys.max() + lip_width))
    return x0, y0, x1, y1
