"""prepare-data: talking-head videos → aligned face crops, 16 kHz audio, face boxes, head speed, manifest.

Output layout (``out/``)::

    manifest.json                 {"crop_size", "fps", "clips": [{"id", "frames", "source", "kind"}],
                                   "skipped": [{"source", "reason"}]}
    <clip id>/frames.npy          uint8 (T, S, S, 3) RGB face crops, S = face.crop_size
    <clip id>/audio.npy           float32 (n,) 16 kHz mono; frame t covers samples [t·16000/fps, …)
    <clip id>/boxes.npy           float32 (T, 4) face box x0, y0, x1, y1 in crop pixels (face-locator mask)
    <clip id>/pose.npy            float32 (T, 3) pitch, yaw, roll in degrees (smoothed)
    <clip id>/velocity.npy        float32 (T,) head-rotation speed, degrees per frame (speed layers)
    <clip id>/clip.json           written last: the clip is complete (resume skips it)

The crop is a square ``crop_scale`` × the face box's longer side around its centre, both smoothed over
time (moving average), so the crop follows the head without jitter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from avatar.audio.io import load_audio
from avatar.engine import SAMPLE_RATE
from avatar.errors import AudioError, AvatarError

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
MANIFEST = "manifest.json"
CLIP_DONE = "clip.json"
DETECT_SIDE = 480
"""Frames are shrunk to this longer side before face-mesh detection (speed)."""
MIN_FACE_FRACTION = 0.8
"""A clip is kept only when a face is found in at least this fraction of its frames."""


@dataclass
class ClipArrays:
    """One processed clip (see the module docstring for shapes and units)."""

    frames: np.ndarray
    audio: np.ndarray
    boxes: np.ndarray
    pose: np.ndarray
    velocity: np.ndarray


class FaceTracker:
    """MediaPipe face mesh in video mode (tracking between frames); one per clip."""

    def __init__(self) -> None:
        from avatar.facemesh import import_mediapipe

        self._mesh = import_mediapipe().solutions.face_mesh.FaceMesh(
            static_image_mode=False, refine_landmarks=True, max_num_faces=1
        )

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """float32 (478, 3) pixel x, y, z of the largest face in ``rgb``, or None."""
        h, w = rgb.shape[:2]
        k = min(1.0, DETECT_SIDE / max(h, w))
        small = cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA) if k < 1 else rgb
        result = self._mesh.process(np.ascontiguousarray(small))
        if not result.multi_face_landmarks:
            return None
        pts = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h, p.z * w) for p in pts], dtype=np.float32)

    def close(self) -> None:
        self._mesh.close()


def read_video_frames(path: Path, fps: float) -> Iterator[np.ndarray]:
    """RGB uint8 frames of ``path`` resampled to ``fps`` (nearest earlier frame for each output instant)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise AvatarError(f"no video stream in {path.name}")
        stream = container.streams.video[0]
        next_t = 0.0
        last = None
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else next_t
            image = frame.to_ndarray(format="rgb24")
            if last is None:
                last = image
            while next_t < t - 1e-6:
                yield last
                next_t += 1.0 / fps
            last = image
        if last is not None:
            yield last


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 (edge-padded), same shape."""
    if width <= 1 or len(x) < 2:
        return x.astype(np.float32)
    pad = width // 2
    padded = np.pad(x, [(pad, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, padded).astype(np.float32)


def fill_missing(values: list[np.ndarray | None]) -> np.ndarray:
    """Replace None entries by the nearest found value (linear in time between found ones)."""
    found = [i for i, v in enumerate(values) if v is not None]
    stack = np.stack([values[i] for i in found]).astype(np.float32)
    idx = np.arange(len(values))
    flat = stack.reshape(len(found), -1)
    out = np.stack([np.interp(idx, found, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(len(values), *stack.shape[1:]).astype(np.float32)


def head_pose_degrees(face: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) degrees from face-mesh landmarks (478, 3) (``avatar.parametric`` convention)."""
    from avatar.face.portrait import head_pose

    return np.degrees(np.array(head_pose(face), dtype=np.float32))


def rotation_speed(pose_deg: np.ndarray) -> np.ndarray:
    """(T, 3) degrees → (T,) degrees per frame: norm of the frame-to-frame pose change."""
    if len(pose_deg) < 2:
        return np.zeros(len(pose_deg), np.float32)
    step = np.linalg.norm(np.diff(pose_deg, axis=0), axis=1)
    return np.concatenate([step[:1], step]).astype(np.float32)


def crop_square(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Square ``side`` window centred at (cx, cy) resampled to (size, size); borders replicate."""
    k = size / side
    matrix = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], dtype=np.float32)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def process_frames(
    frames: Iterable[np.ndarray],
    audio: np.ndarray,
    fps: float,
    crop_size: int,
    crop_scale: float,
    smooth: int = 7,
    crop_shift: float = 0.0,
) -> ClipArrays:
    """Track the face in ``frames`` and cut smoothed square crops. Raises ``AvatarError`` when the face is
    missing in too many frames or the clip is shorter than one frame of audio.

    The crop is ``crop_scale`` × the face box's longer side, centred ``crop_shift`` × that side below the
    box centre (0 → the face; about 0.28 with scale 0.56 → the mouth region from nose to chin)."""
    tracker = FaceTracker()
    images: list[np.ndarray] = []
    marks: list[np.ndarray | None] = []
    try:
        for image in frames:
            images.append(image)
            marks.append(tracker.landmarks(image))
    finally:
        tracker.close()
    if not images:
        raise AvatarError("no frames")
    found = sum(m is not None for m in marks)
    if found < MIN_FACE_FRACTION * len(marks):
        raise AvatarError(f"face found in only {found}/{len(marks)} frames")
    boxes = fill_missing(
        [None if m is None else np.array([*m[:, :2].min(0), *m[:, :2].max(0)]) for m in marks]
    )
    poses = fill_missing([None if m is None else head_pose_degrees(m) for m in marks])
    longer = moving_average(np.max(boxes[:, 2:] - boxes[:, :2], axis=1, keepdims=True), smooth)
    centre = moving_average((boxes[:, :2] + boxes[:, 2:]) / 2, smooth)
    centre[:, 1] += crop_shift * longer[:, 0]
    side = longer * crop_scale
    crops = np.stack(
        [
            crop_square(img, c[0], c[1], s[0], crop_size)
            for img, c, s in zip(images, centre, side, strict=True)
        ]
    )
    k = crop_size / side
    offset = centre - side / 2
    crop_boxes = np.concatenate([(boxes[:, :2] - offset) * k, (boxes[:, 2:] - offset) * k], axis=1)
    pose = moving_average(poses, 3)
    n = len(images)
    need = int(round(n * SAMPLE_RATE / fps))
    audio = np.pad(audio[:need], (0, max(0, need - len(audio)))).astype(np.float32)
    return ClipArrays(crops, audio, crop_boxes.astype(np.float32), pose, rotation_speed(pose))


def clip_id_for(path: Path, root: Path) -> str:
    """Filesystem-safe id from the path relative to ``root`` (``talking/tys/video.mp4`` → ``tys_video``)."""
    rel = path.relative_to(root).with_suffix("")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(rel.parts)) or "clip"


def save_clip(out_dir: Path, clip: ClipArrays, meta: dict) -> None:
    """Write one clip's arrays; ``clip.json`` last so an interrupted clip is redone on resume."""
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "frames.npy", clip.frames)
    np.save(out_dir / "audio.npy", clip.audio)
    np.save(out_dir / "boxes.npy", clip.boxes)
    np.save(out_dir / "pose.npy", clip.pose)
    np.save(out_dir / "velocity.npy", clip.velocity)
    (out_dir / CLIP_DONE).write_text(json.dumps({**meta, "frames": int(len(clip.frames))}, indent=1))


def write_manifest(out: Path, crop_size: int, fps: float, skipped: list[dict]) -> dict:
    """Collect every finished clip under ``out`` into ``manifest.json`` (merging earlier skip lists)."""
    clips = []
    for done in sorted(out.glob(f"*/{CLIP_DONE}")):
        meta = json.loads(done.read_text())
        clips.append({"id": done.parent.name, **meta})
    old = out / MANIFEST
    previous = json.loads(old.read_text()).get("skipped", []) if old.is_file() else []
    done_sources = {c.get("source") for c in clips}
    merged = {s["source"]: s for s in previous + skipped if s["source"] not in done_sources}
    manifest = {"crop_size": crop_size, "fps": fps, "clips": clips, "skipped": list(merged.values())}
    old.write_text(json.dumps(manifest, indent=1))
    return manifest


def prepare_videos(
    videos: Path,
    out: Path,
    crop_size: int,
    crop_scale: float,
    fps: float = 25.0,
    progress: bool = True,
    crop_shift: float = 0.0,
) -> dict:
    """Process every video under ``videos`` (recursive) into ``out``; returns the manifest.

    Clips with a finished ``clip.json`` are skipped (resume); videos without audio, without a face or that
    fail to decode are listed under ``skipped`` with a one-line reason.
    """
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise AvatarError(f"video folder not found: {videos}")
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in videos.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    skipped: list[dict] = []
    from tqdm import tqdm

    for path in tqdm(paths, desc="prepare-data", unit="clip", disable=not progress):
        clip_dir = out / clip_id_for(path, videos)
        if (clip_dir / CLIP_DONE).is_file():
            continue
        try:
            audio = load_audio(path)
            clip = process_frames(
                read_video_frames(path, fps), audio, fps, crop_size, crop_scale, crop_shift=crop_shift
            )
        except (AvatarError, AudioError, av.error.FFmpegError, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            skipped.append({"source": str(path), "reason": reason})
            continue
        save_clip(clip_dir, clip, {"source": str(path), "kind": "video", "fps": fps})
    return write_manifest(out, crop_size, fps, skipped)
