"""Synthetic talking clips: the parametric engine animates portraits with speech, augmented, written in the
same layout as ``avatar.training.data`` (so one loader reads both).

Speech comes from a folder of audio files (cut into ≤ ``max_seconds`` pieces) and from espeak-ng voices in
several languages. Augmentation per clip (seeded): zoom/shift of the whole frame, horizontal flip, colour
gain/offset of the crops, speaking rate (audio resampled faster/slower before the engine hears it).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.signal import resample_poly

from avatar.audio.io import load_audio
from avatar.engine import SAMPLE_RATE
from avatar.errors import AvatarError
from avatar.training.data import CLIP_DONE, process_frames, save_clip, write_manifest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a"}
ESPEAK_LINES = {
    "en": "The quick brown fox jumps over the lazy dog, and then it rests in the warm sun.",
    "es": "Hoy hace buen tiempo y vamos a caminar por el parque con mis amigos.",
    "fr": "Il fait beau aujourd'hui, nous allons nous promener au bord de la riviere.",
    "de": "Heute ist ein schoener Tag, wir gehen im Wald spazieren und trinken Tee.",
    "it": "Oggi il cielo e sereno e andiamo al mercato a comprare frutta fresca.",
    "pt": "Hoje o dia esta bonito e vamos passear na praia com a familia.",
    "ru": "Сегодня хорошая погода, и мы пойдём гулять в парк.",
    "hi": "आज मौसम बहुत अच्छा है और हम बाजार जा रहे हैं।",
    "cmn": "今天天气很好，我们一起去公园散步吧。",
    "ja": "今日はいい天気なので、公園を散歩しましょう。",
}


@dataclass(frozen=True)
class Augmentation:
    """Per-clip augmentation drawn from a seed (see ``draw_augmentation``)."""

    zoom: float
    shift: tuple[float, float]
    flip: bool
    gain: tuple[float, float, float]
    offset: float
    rate: float


def draw_augmentation(rng: np.random.Generator, strength: float = 1.0) -> Augmentation:
    """strength 0 → identity; 1 → zoom ±12 %, shift ±5 %, flip ½, gain ±12 %, offset ±12, rate 0.85–1.2."""
    s = float(strength)
    return Augmentation(
        zoom=float(1 + s * rng.uniform(-0.12, 0.12)),
        shift=(float(s * rng.uniform(-0.05, 0.05)), float(s * rng.uniform(-0.05, 0.05))),
        flip=bool(s > 0 and rng.random() < 0.5),
        gain=tuple(float(1 + s * g) for g in rng.uniform(-0.12, 0.12, 3)),
        offset=float(s * rng.uniform(-12, 12)),
        rate=float(1 + s * rng.uniform(-0.15, 0.2)),
    )


def change_rate(audio: np.ndarray, rate: float) -> np.ndarray:
    """Play ``audio`` ``rate`` × faster (resampling; pitch moves with it, as in a tape speed-up)."""
    if abs(rate - 1.0) < 1e-3:
        return audio
    up = 100
    down = int(round(100 * rate))
    return resample_poly(audio, up, down).astype(np.float32)


def augment_frame(image: np.ndarray, aug: Augmentation) -> np.ndarray:
    """Zoom about the centre, shift, then flip the full frame (uint8 (H, W, 3))."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, aug.zoom)
    matrix[:, 2] += (aug.shift[0] * w, aug.shift[1] * h)
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out[:, ::-1].copy() if aug.flip else out


def recolour(crops: np.ndarray, aug: Augmentation) -> np.ndarray:
    """Per-channel gain and a brightness offset on uint8 crops (T, S, S, 3)."""
    out = crops.astype(np.float32) * np.array(aug.gain, np.float32) + aug.offset
    return out.round().clip(0, 255).astype(np.uint8)


def espeak_speech(out_dir: Path, voices: list[str]) -> list[Path]:
    """One WAV per espeak-ng voice in ``voices`` (cached in ``out_dir``); [] when espeak-ng is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for voice in voices:
        path = out_dir / f"espeak_{voice}.wav"
        if not path.is_file():
            text = ESPEAK_LINES.get(voice, ESPEAK_LINES["en"])
            done = subprocess.run([exe, "-v", voice, "-w", str(path), text], capture_output=True)
            if done.returncode != 0:
                continue
        paths.append(path)
    return paths


def speech_pieces(paths: list[Path], max_seconds: float) -> list[tuple[str, np.ndarray]]:
    """(name, 16 kHz audio) pieces of at most ``max_seconds`` (and at least 1 s) from every file."""
    pieces = []
    step = int(max_seconds * SAMPLE_RATE)
    for path in paths:
        try:
            audio = load_audio(path)
        except AvatarError:
            continue
        for i, start in enumerate(range(0, len(audio), step)):
            piece = audio[start : start + step]
            if len(piece) >= SAMPLE_RATE and np.abs(piece).max() > 1e-3:
                pieces.append((f"{path.stem}_{i}", piece))
    return pieces


def render_clip(
    engine,
    portrait: Path,
    audio: np.ndarray,
    aug: Augmentation,
    seed: int,
    crop_size: int,
    crop_scale: float,
    crop_shift: float = 0.0,
):
    """Parametric-engine frames of ``portrait`` speaking ``audio`` (rate-augmented) → ``ClipArrays``."""
    from avatar.render import render_frames

    speech = change_rate(audio, aug.rate)
    avatar = engine.prepare(portrait)
    frames = (
        augment_frame(f.image, aug) for f in render_frames(engine, avatar, speech, seed=seed, watermark=False)
    )
    clip = process_frames(frames, speech, engine.fps, crop_size, crop_scale, crop_shift=crop_shift)
    clip.frames = recolour(clip.frames, aug)
    return clip


def prepare_synthetic(
    portraits: Path,
    speech: Path | None,
    out: Path,
    crop_size: int,
    crop_scale: float,
    clips: int = 16,
    seed: int = 0,
    render_size: int = 384,
    max_seconds: float = 4.0,
    voices: tuple[str, ...] = tuple(ESPEAK_LINES),
    augment: float = 1.0,
    fps: float = 25.0,
    progress: bool = True,
    crop_shift: float = 0.0,
) -> dict:
    """Render ``clips`` synthetic clips (portrait × speech piece × augmentation, seeded) into ``out``.

    Resumable (finished clips are skipped); portraits the engine rejects are listed as skipped.
    """
    from tqdm import tqdm

    from avatar.engines import create_engine

    portraits, out = Path(portraits), Path(out)
    images = sorted(p for p in portraits.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise AvatarError(f"no portrait images in {portraits}")
    audio_paths = (
        sorted(p for p in Path(speech).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if speech else []
    )
    audio_paths += espeak_speech(out / "_speech", list(voices))
    pieces = speech_pieces(audio_paths, max_seconds)
    if not pieces:
        raise AvatarError("no usable speech for synthetic clips (give --speech or install espeak-ng)")
    engine = create_engine("parametric", fps=fps, size=render_size, seed=seed)
    rng = np.random.default_rng(seed)
    plan = [
        (
            images[rng.integers(len(images))],
            pieces[rng.integers(len(pieces))],
            draw_augmentation(rng, augment),
        )
        for _ in range(clips)
    ]
    skipped: list[dict] = []
    bad_portraits: set[Path] = set()
    for i, (portrait, (speech_name, audio), aug) in enumerate(
        tqdm(plan, desc="synthetic", unit="clip", disable=not progress)
    ):
        clip_dir = out / f"syn_{i:04d}"
        source = f"synthetic:{portrait.name}+{speech_name}"
        if (clip_dir / CLIP_DONE).is_file() or portrait in bad_portraits:
            continue
        try:
            clip = render_clip(engine, portrait, audio, aug, seed + i, crop_size, crop_scale, crop_shift)
        except AvatarError as exc:
            bad_portraits.add(portrait)
            skipped.append({"source": source, "reason": str(exc).splitlines()[0]})
            continue
        meta = {"source": source, "kind": "synthetic", "fps": fps, "augmentation": aug.__dict__}
        save_clip(clip_dir, clip, meta)
    return write_manifest(out, crop_size, fps, skipped)
