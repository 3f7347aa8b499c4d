"""Temporal stability: background flicker outside the face, landmark jitter while silent."""

from __future__ import annotations

import cv2
import numpy as np

from avatar.evaluation.mouth_track import face_height

FACE_HULL_MARGIN = 0.25
"""The face hull is dilated by this fraction of the face height before measuring the background."""


def face_mask(shape: tuple[int, int], landmarks: np.ndarray, margin: float = FACE_HULL_MARGIN) -> np.ndarray:
    """Bool (h, w) mask of the convex hull of one frame's mesh (478, 2|3) pixels, dilated by ``margin``
    face heights. All False when the landmarks are NaN (no face)."""
    mask = np.zeros(shape, dtype=np.uint8)
    points = landmarks[:, :2]
    if not np.isfinite(points).all():
        return mask.astype(bool)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    height = float(face_height(landmarks[None])[0])
    # Distance to the hull (a few ms) instead of dilating with a big elliptic kernel (~100 ms at 512 px).
    distance = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    return distance <= margin * height


class BackgroundFlicker:
    """Streaming mean absolute temporal difference (0-255 scale, averaged over RGB) of the pixels
    outside the dilated face hull of both frames of each consecutive pair.

    Feed frames in order; frames without a face reuse the last known face mask (none: whole frame).
    """

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._previous_mask: np.ndarray | None = None
        self._last_mask: np.ndarray | None = None
        self._total = 0.0
        self._pairs = 0

    def add(self, image: np.ndarray, landmarks: np.ndarray) -> None:
        """``image``: RGB uint8 (h, w, 3); ``landmarks``: (478, 2|3) pixels or NaN."""
        mask = face_mask(image.shape[:2], landmarks)
        if not mask.any() and self._last_mask is not None and self._last_mask.shape == mask.shape:
            mask = self._last_mask
        self._last_mask = mask
        current = np.ascontiguousarray(image, dtype=np.uint8)
        if self._previous is not None and self._previous.shape == current.shape:
            outside = ~(mask | self._previous_mask)
            if outside.any():
                channel_means = cv2.mean(cv2.absdiff(current, self._previous), mask=outside.astype(np.uint8))
                self._total += float(np.mean(channel_means[: current.shape[2]]))
                self._pairs += 1
        self._previous, self._previous_mask = current, mask

    @property
    def value(self) -> float | None:
        """Mean over frame pairs, or None before two frames were seen."""
        return self._total / self._pairs if self._pairs else None


def background_flicker(images: list[np.ndarray], landmarks: np.ndarray) -> float | None:
    """Flicker of a whole clip: ``images`` RGB uint8 list, ``landmarks`` (frames, 478, 2|3)."""
    meter = BackgroundFlicker()
    for image, points in zip(images, landmarks, strict=True):
        meter.add(image, points)
    return meter.value


def landmark_motion(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame landmark speed and jerk, normalised by the face height, shape (frames,) each.

    ``speed[t]`` = mean over landmarks of |p[t] - p[t-1]| (2-D); ``jerk[t]`` = mean |p[t+1] - 2p[t] + p[t-1]|,
    which ignores smooth motion (a slow sway) and keeps frame-to-frame shaking. NaN where undefined.
    """
    points = landmarks[:, :, :2].astype(np.float64)
    height = face_height(landmarks)
    frames = len(points)
    speed = np.full(frames, np.nan)
    jerk = np.full(frames, np.nan)
    if frames >= 2:
        speed[1:] = np.linalg.norm(np.diff(points, axis=0), axis=-1).mean(axis=1) / height[1:]
    if frames >= 3:
        second = points[2:] - 2 * points[1:-1] + points[:-2]
        jerk[1:-1] = np.linalg.norm(second, axis=-1).mean(axis=1) / height[1:-1]
    return speed, jerk


def silent_jitter(landmarks: np.ndarray, silent: np.ndarray) -> tuple[float | None, float | None, int]:
    """Mean landmark speed and jerk (see ``landmark_motion``) over frames flagged ``silent`` (bool,
    (frames,)), with how many finite frames went in. (None, None, 0) when there are none."""
    speed, jerk = landmark_motion(landmarks)
    keep = np.asarray(silent, dtype=bool)[: len(speed)]
    speed_ok = keep & np.isfinite(speed)
    jerk_ok = keep & np.isfinite(jerk)
    if not speed_ok.any():
        return None, None, 0
    mean_jerk = float(jerk[jerk_ok].mean()) if jerk_ok.any() else None
    return float(speed[speed_ok].mean()), mean_jerk, int(speed_ok.sum())
