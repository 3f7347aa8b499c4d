"""Capture of one real talking clip: face-mesh landmarks per video frame and the clip's speech.

This is the expensive, raw step of ``prepare-motion`` (about 15 ms per frame on one core); everything
derived from it (head pose, expression, eye openness, audio features) is cheap and computed later by
``avatar.motion.canonical`` and ``avatar.motion.audio_features``.

A capture holds:

* ``landmarks`` float32 (frames, 478, 3): MediaPipe's refined face mesh in source-video pixels (``x``,
  ``y`` image coordinates, ``z`` depth on the ``x`` scale), NaN where no face was found;
* ``faces`` uint8 (frames,): how many faces MediaPipe tracked in each frame (0, 1 or 2; 2 means "two or
  more");
* ``times`` float64 (frames,): each frame's time in seconds on the clip's audio clock;
* ``fps`` (the stream's average frame rate), ``width``, ``height``;
* ``audio`` float32 (samples,): the speech, 16 kHz mono.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.engine import SAMPLE_RATE
from avatar.errors import AvatarError

NUM_LANDMARKS = 478
MAX_SIDE = 480
"""Frames are downscaled so their longer side is at most this many pixels before the face mesh runs."""
CAPTURE_VERSION = 1


@dataclass
class ClipCapture:
    """Raw per-frame face mesh and speech of one clip (see the module docstring for shapes and units)."""

    landmarks: np.ndarray
    faces: np.ndarray
    times: np.ndarray
    fps: float
    width: int
    height: int
    audio: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def save(self, path: str | Path) -> None:
        """Write a compressed ``.npz`` (float16 is not used: landmark noise is ~0.1 px)."""
        np.savez_compressed(
            Path(path),
            version=CAPTURE_VERSION,
            landmarks=self.landmarks.astype(np.float32),
            faces=self.faces.astype(np.uint8),
            times=self.times,
            fps=self.fps,
            width=self.width,
            height=self.height,
            audio=self.audio.astype(np.float32),
        )

    @classmethod
    def load(cls, path: str | Path) -> ClipCapture:
        """Read a capture written by ``save``. Raises ``AvatarError`` for a missing or foreign file."""
        try:
            with np.load(Path(path)) as data:
                if int(data["version"]) != CAPTURE_VERSION:
                    raise AvatarError(
                        f"{Path(path).name}: capture version {int(data['version'])}, "
                        f"expected {CAPTURE_VERSION}; run prepare-motion again"
                    )
                return cls(
                    data["landmarks"],
                    data["faces"],
                    data["times"],
                    float(data["fps"]),
                    int(data["width"]),
                    int(data["height"]),
                    data["audio"],
                )
        except (OSError, KeyError, ValueError) as exc:
            raise AvatarError(
                f"cannot read motion capture {Path(path).name}: {exc.__class__.__name__}"
            ) from None


def capture_clip(
    video: str | Path, audio: str | Path | None = None, max_seconds: float | None = None
) -> ClipCapture:
    """Track the face mesh through ``video`` and load its speech (from ``audio`` when given, e.g. a WAV of
    the same length, else from the video's own sound track).

    Raises ``AvatarError`` / ``AudioError`` with a one-line reason for missing or undecodable files.
    """
    import cv2

    from avatar.audio.io import load_audio
    from avatar.evaluation.media import read_video, video_fps
    from avatar.facemesh import create_face_mesh

    video = Path(video)
    fps = video_fps(video)
    speech = load_audio(audio if audio is not None else video)
    if max_seconds is not None:
        speech = speech[: int(round(max_seconds * SAMPLE_RATE))]
    mesh = create_face_mesh(
        static_image_mode=False, max_num_faces=2, min_detection_confidence=0.5, min_tracking_confidence=0.5
    )
    rows: list[np.ndarray] = []
    counts: list[int] = []
    times: list[float] = []
    width = height = 0
    try:
        for time, frame in read_video(video, max_seconds=max_seconds):
            height, width = frame.shape[:2]
            scale = min(1.0, MAX_SIDE / max(height, width))
            small = (
                frame
                if scale >= 1.0
                else cv2.resize(
                    frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
                )
            )
            result = mesh.process(np.ascontiguousarray(small))
            points = np.full((NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
            found = result.multi_face_landmarks or []
            if found:
                # The largest face is the speaker's.
                best = max(found, key=lambda f: _span(f.landmark))
                points[:] = [(p.x * width, p.y * height, p.z * width) for p in best.landmark[:NUM_LANDMARKS]]
            rows.append(points)
            counts.append(min(len(found), 2))
            times.append(time)
    finally:
        mesh.close()
    if not rows:
        raise AvatarError(f"no video frames in {video.name}")
    return ClipCapture(
        np.stack(rows),
        np.array(counts, dtype=np.uint8),
        np.array(times, dtype=np.float64),
        fps,
        width,
        height,
        speech,
    )


def _span(points: object) -> float:
    xs = [p.x for p in points]  # type: ignore[attr-defined]
    ys = [p.y for p in points]  # type: ignore[attr-defined]
    return (max(xs) - min(xs)) * (max(ys) - min(ys))
