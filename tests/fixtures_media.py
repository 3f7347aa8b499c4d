"""Media the browser tests make themselves: a loopable 48 kHz speech WAV and a mouth box finder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from avatar.audio.io import load_audio
from tests.media import vowel_bursts, write_wav

SPEECH_TEXT = (
    "Hello there. I am a talking portrait, and my lips follow your voice. "
    "Papa made a big blue balloon, and we all sang along."
)


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
            speech = load_audio(raw, sample_rate=rate)
            speech *= 0.7 / max(1e-6, float(np.abs(speech).max()))
    if speech is None:
        speech = vowel_bursts(4.0, rate, lead_silence_s=0.0)
    silence = np.zeros(round(lead_silence_s * rate), np.float32)
    tail = np.zeros(round(tail_silence_s * rate), np.float32)
    return write_wav(path, np.concatenate([silence, speech, tail]), rate)


def mouth_box(image: np.ndarray, margin: float = 0.35) -> tuple[int, int, int, int] | None:
    """Lip bounding box ``(x0, y0, x1, y1)`` in pixels of an RGB uint8 image, from MediaPipe's face mesh.

    The box is widened by ``margin`` of the lip width on each side and extended downwards by one lip
    width, so an opening jaw stays inside it. None when no face is found.
    """
    from avatar.facemesh import import_mediapipe  # heavy import, only for the tests that need it

    mp = import_mediapipe()

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
