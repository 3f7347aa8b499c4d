"""Decode any audio file PyAV understands into 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from avatar.engine import SAMPLE_RATE
from avatar.errors import AudioError


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return the first audio stream of ``path`` as float32 mono in [-1, 1] at ``sample_rate`` Hz.

    Raises ``AudioError`` with a one-line reason when the file is missing, undecodable or silent-empty.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"no audio stream in {path.name}")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise AudioError(f"cannot decode audio {path.name}: {exc.__class__.__name__}") from None
    if not chunks:
        raise AudioError(f"audio file {path.name} contains no samples")
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if audio.size == 0:
        raise AudioError(f"audio file {path.name} contains no samples")
    return np.clip(audio, -1.0, 1.0)


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1)."""
    return pcm.astype(np.float32) / 32768.0


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16 (clipped)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
