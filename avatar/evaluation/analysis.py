"""Per-clip analysis: stream frames through the face mesh, flicker meter and identity sampler, then turn
the tracks into the measures of one case (a flat dict of numbers, JSON-ready)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avatar.evaluation.identity import FaceEmbedder, embedding_distance, mesh_face_box
from avatar.evaluation.life import blink_measures, eye_aspect_ratio, head_motion, mouth_rest, spread
from avatar.evaluation.mouth_track import FaceMeshTracker, detected, mouth_openness
from avatar.evaluation.reenactment import GT_MAX_LAG_MS, closed_share, compare_to_truth, head_pose_std
from avatar.evaluation.stability import BackgroundFlicker, silent_jitter
from avatar.evaluation.sync import best_lag_correlation, frame_speech, frame_times, speech_envelope

IDENTITY_EVERY = 5
"""Embed every n-th frame for the identity distance (the dlib ResNet costs ~0.1 s a frame)."""


@dataclass
class ClipTracks:
    """What one clip (rendered or real) looked like, frame by frame on a uniform ``fps`` grid."""

    fps: float
    landmarks: np.ndarray
    """float32 (frames, 478, 3) pixels, NaN where no face."""
    flicker: float | None
    identity: list[float] = field(default_factory=list)
    """Embedding distances to the portrait of the sampled frames where a face was embedded."""
    identity_sampled: int = 0

    @property
    def mouth(self) -> np.ndarray:
        return mouth_openness(self.landmarks)


class FrameAnalyzer:
    """Consumes a clip's RGB frames in order (``add``) and returns its ``ClipTracks`` (``finish``).

    ``portrait_embedding`` (from ``portrait_identity``) enables the identity distance.
    """

    def __init__(
        self,
        fps: float,
        embedder: FaceEmbedder | None = None,
        portrait_embedding: np.ndarray | None = None,
        identity_every: int = IDENTITY_EVERY,
    ) -> None:
        self.fps = fps
        self._tracker = FaceMeshTracker(video=True)
        self._flicker = BackgroundFlicker()
        self._embedder = embedder if portrait_embedding is not None else None
        self._portrait = portrait_embedding
        self._every = max(1, int(identity_every))
        self._rows: dict[int, np.ndarray] = {}
        self._identity: list[float] = []
        self._sampled = 0
        self._count = 0

    def add(self, image: np.ndarray, index: int | None = None) -> None:
        """Analyse RGB uint8 ``image`` (h, w, 3) as grid frame ``index`` (default: the next one)."""
        index = self._count if index is None else int(index)
        points = self._tracker.landmarks(image)
        self._rows[index] = points
        self._flicker.add(image, points)
        if self._embedder is not None and self._count % self._every == 0:
            self._sampled += 1
            box = mesh_face_box(points)
            if box is not None:
                vector = self._embedder.embed(image, box)
                if vector is not None:
                    self._identity.append(embedding_distance(vector, self._portrait))
        self._count += 1

    def finish(self, num_frames: int | None = None) -> ClipTracks:
        """Tracks over grid frames ``0..num_frames-1`` (default: up to the last added); gaps are NaN."""
        self._tracker.close()
        frames = num_frames if num_frames is not None else (max(self._rows) + 1 if self._rows else 0)
        landmarks = np.full((frames, 478, 3), np.nan, dtype=np.float32)
        for index, points in self._rows.items():
            if 0 <= index < frames:
                landmarks[index] = points
        return ClipTracks(self.fps, landmarks, self._flicker.value, self._identity, self._sampled)


def portrait_identity(image: np.ndarray, embedder: FaceEmbedder) -> np.ndarray | None:
    """Embedding of the portrait's face (RGB uint8), located with a still-image face mesh."""
    with FaceMeshTracker(video=False) as tracker:
        box = mesh_face_box(tracker.landmarks(image))
    return embedder.embed(image, box)


def mesh_noise_floor(image: np.ndarray, frames: int = 25) -> tuple[float | None, float | None]:
    """Landmark speed and jerk (face heights per frame) that the tracking face mesh reports for the same
    still RGB ``image`` repeated ``frames`` times: the floor under the silent-jitter measures."""
    with FaceMeshTracker(video=True) as tracker:
        landmarks = tracker.track([image] * frames)
    speed, jerk, _ = silent_jitter(landmarks, np.ones(frames, dtype=bool))
    return speed, jerk


@dataclass
class CaseMeasures:
    """The numbers of one clip plus the tracks the plots need."""

    metrics: dict[str, float | int | None]
    mouth: np.ndarray
    envelope: np.ndarray
    speech: np.ndarray


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def measure_clip(
    tracks: ClipTracks,
    audio: np.ndarray,
    real_mouth: np.ndarray | None = None,
    real_landmarks: np.ndarray | None = None,
) -> CaseMeasures:
    """All per-clip measures from ``tracks`` and the driving 16 kHz ``audio``.

    Self-reenactment ground truth, on the same frame grid as ``tracks``: ``real_landmarks`` (frames, 478,
    3) pixels of the real speaker adds every ``reenactment.compare_to_truth`` measure; ``real_mouth``
    (frames,) alone adds only ``gt_r`` / ``gt_lag_ms``.
    """
    fps, frames = tracks.fps, len(tracks.landmarks)
    mouth = tracks.mouth
    envelope = speech_envelope(audio, frame_times(frames, fps))
    speech, silent = frame_speech(audio, fps, frames)
    sync = best_lag_correlation(mouth, envelope, fps)
    found = detected(tracks.landmarks)
    ear = eye_aspect_ratio(tracks.landmarks)
    speed, jerk, silent_frames = silent_jitter(tracks.landmarks, silent)
    pose_std = head_pose_std(tracks.landmarks)
    metrics: dict[str, float | int | None] = {
        "frames": frames,
        "seconds": frames / fps,
        "face_detection_rate": float(found.mean()) if frames else 0.0,
        "sync_r": sync.r,
        "sync_lag_ms": sync.lag_ms,
        "mouth_range": spread(mouth),
        "identity_distance": float(np.mean(tracks.identity)) if tracks.identity else None,
        "identity_distance_max": float(np.max(tracks.identity)) if tracks.identity else None,
        "identity_embedded_rate": len(tracks.identity) / tracks.identity_sampled
        if tracks.identity_sampled
        else None,
        "background_flicker": tracks.flicker,
        "silent_frames": silent_frames,
        "silent_landmark_speed": speed,
        "silent_landmark_jerk": jerk,
        **blink_measures(ear, fps),
        **head_motion(tracks.landmarks),
        **mouth_rest(mouth, speech, silent),
        "lip_closed_share": closed_share(mouth),
        **dict(zip(("head_pitch_std_deg", "head_yaw_std_deg", "head_roll_std_deg"), pose_std, strict=True)),
    }
    if real_landmarks is not None:
        metrics.update(compare_to_truth(tracks.landmarks, real_landmarks, fps))
    elif real_mouth is not None:
        truth = best_lag_correlation(mouth, real_mouth, fps, GT_MAX_LAG_MS)
        metrics["gt_r"] = truth.r
        metrics["gt_lag_ms"] = truth.lag_ms
    metrics = {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in metrics.items()}
    return CaseMeasures(metrics=metrics, mouth=mouth, envelope=envelope, speech=speech)
