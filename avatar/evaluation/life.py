"""Signs of life: blinks (eye aspect ratio), head motion (rigid fit of the mesh), mouth rest in silence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from avatar.evaluation.mouth_track import face_height
from avatar.face.alignment import similarity_fit

# Eye contour points of the MediaPipe mesh: corner, two upper lid, corner, two lower lid (p1..p6).
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)

# Points that move little with expression (forehead, nose bridge and tip, eye corners, temples).
RIGID_POINTS = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 234, 454, 127, 356, 70, 300)

BLINK_CLOSE = 0.70
"""A blink starts when the eye aspect ratio falls below this fraction of its running baseline..."""
BLINK_REOPEN = 0.85
"""...and ends when it climbs back above this fraction (hysteresis: one dip = one blink)."""


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Mean of both eyes' (|p2-p6| + |p3-p5|) / (2 |p1-p4|), shape (frames,); ~0.25-0.35 open, < 0.15
    closed; NaN where no face. ``landmarks``: (frames, 478, 2|3) pixels."""
    ratios = []
    for p1, p2, p3, p4, p5, p6 in (RIGHT_EYE, LEFT_EYE):
        pts = landmarks[:, :, :2]
        vertical = np.linalg.norm(pts[:, p2] - pts[:, p6], axis=-1) + np.linalg.norm(
            pts[:, p3] - pts[:, p5], axis=-1
        )
        horizontal = np.linalg.norm(pts[:, p1] - pts[:, p4], axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(vertical / (2.0 * horizontal))
    return (ratios[0] + ratios[1]) / 2.0


@dataclass(frozen=True)
class Blink:
    """One dip of the eye aspect ratio: frames ``[start, stop)`` below the reopen level; ``depth`` is
    the lowest ratio over the running baseline (≈0.1-0.2 for a full human blink, 1 = no closing)."""

    start: int
    stop: int
    depth: float


def blink_events(ear: np.ndarray, fps: float, baseline_seconds: float = 3.0) -> list[Blink]:
    """Dips of the eye-aspect-ratio track ``ear`` (frames,) below ``BLINK_CLOSE`` times its running
    median (a ``baseline_seconds`` window, so slow changes of pose or expression are not blinks), ending
    when it is back above ``BLINK_REOPEN`` times it. NaN frames (no face) neither start nor end a blink."""
    ear = np.asarray(ear, dtype=np.float64)
    ok = np.isfinite(ear)
    if ok.sum() < 3:
        return []
    filled = np.interp(np.arange(len(ear)), np.flatnonzero(ok), ear[ok])
    size = max(3, int(round(baseline_seconds * fps)) | 1)
    baseline = median_filter(filled, size=size, mode="nearest")
    events: list[Blink] = []
    start, depth = -1, 1.0
    for index, (value, base, valid) in enumerate(zip(ear, baseline, ok, strict=True)):
        if not valid or base <= 0:
            continue
        if start < 0 and value < BLINK_CLOSE * base:
            start, depth = index, value / base
        elif start >= 0:
            depth = min(depth, value / base)
            if value > BLINK_REOPEN * base:
                events.append(Blink(start, index, depth))
                start, depth = -1, 1.0
    if start >= 0:
        events.append(Blink(start, len(ear), depth))
    return events


def count_blinks(ear: np.ndarray, fps: float) -> int:
    """Number of blinks (``blink_events``) in the eye-aspect-ratio track."""
    return len(blink_events(ear, fps))


def blink_measures(ear: np.ndarray, fps: float) -> dict[str, float | int | None]:
    """Blink count, rate per minute (people: ~10-20 at rest, fewer while talking), mean depth (lowest
    ratio to baseline) and mean duration in ms of the blinks in the eye-aspect-ratio track."""
    events = blink_events(ear, fps)
    minutes = len(ear) / fps / 60.0
    return {
        "blinks": len(events),
        "blinks_per_min": len(events) / minutes if minutes > 0 else 0.0,
        "blink_depth": float(np.mean([e.depth for e in events])) if events else None,
        "blink_ms": float(np.mean([e.stop - e.start for e in events]) * 1000.0 / fps) if events else None,
    }


def head_angles(landmarks: np.ndarray) -> np.ndarray:
    """Head rotation of every frame relative to the clip's median face, degrees (frames, 3) as
    (pitch, yaw, roll) about the image x, y and z axes; NaN where no face. Needs (frames, 478, 3)."""
    rigid = landmarks[:, RIGID_POINTS, :3].astype(np.float64)
    ok = np.isfinite(rigid).all(axis=(1, 2))
    angles = np.full((len(landmarks), 3), np.nan)
    if not ok.any():
        return angles
    reference = np.median(rigid[ok], axis=0)
    _, r, _ = similarity_fit(np.broadcast_to(reference, rigid[ok].shape), rigid[ok])
    pitch = np.arctan2(r[:, 2, 1], r[:, 2, 2])
    yaw = np.arcsin(np.clip(-r[:, 2, 0], -1.0, 1.0))
    roll = np.arctan2(r[:, 1, 0], r[:, 0, 0])
    angles[ok] = np.degrees(np.stack([pitch, yaw, roll], axis=1))
    return angles


def spread(values: np.ndarray, low: float = 5.0, high: float = 95.0) -> float | None:
    """Robust range (``high`` minus ``low`` percentile) of the finite values; None if there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return float(np.percentile(values, high) - np.percentile(values, low))


def head_motion(landmarks: np.ndarray) -> dict[str, float | None]:
    """5-95 % ranges of head pitch, yaw and roll (degrees) and of the rigid-point centroid (in face
    heights) over the clip."""
    angles = head_angles(landmarks)
    centroid = landmarks[:, RIGID_POINTS, :2].astype(np.float64).mean(axis=1)
    height = np.nanmedian(face_height(landmarks)) if np.isfinite(face_height(landmarks)).any() else np.nan
    dx, dy = spread(centroid[:, 0]), spread(centroid[:, 1])
    shift = float(np.hypot(dx, dy) / height) if dx is not None and np.isfinite(height) else None
    return {
        "head_pitch_range_deg": spread(angles[:, 0]),
        "head_yaw_range_deg": spread(angles[:, 1]),
        "head_roll_range_deg": spread(angles[:, 2]),
        "head_shift_range": shift,
    }


def mouth_rest(mouth: np.ndarray, speech: np.ndarray, silent: np.ndarray) -> dict[str, float | None]:
    """Mean mouth openness in ``silent`` frames and in ``speech`` frames (bool masks, (frames,)).

    A live face closes (or nearly closes) its mouth in silence: the silence mean should be well below
    the speech mean; a mouth that keeps moving in silence or a frozen one gives a ratio near 1.
    """
    mouth = np.asarray(mouth, dtype=np.float64)

    def mean_of(mask: np.ndarray) -> float | None:
        picked = mouth[np.asarray(mask, dtype=bool)[: len(mouth)]]
        picked = picked[np.isfinite(picked)]
        return float(picked.mean()) if picked.size else None

    silence, talking = mean_of(silent), mean_of(speech)
    ratio = silence / talking if silence is not None and talking else None
    return {"mouth_silence": silence, "mouth_speech": talking, "mouth_silence_ratio": ratio}
