"""Head pose separated from expression: a similarity fit of each frame's face mesh to a canonical face.

Conventions (shared with ``FaceMotion`` and the renderer):

* The canonical face ``template`` is float32 (478, 3), centred, in **face heights** (forehead-top
  landmark 10 to chin 152 = 1), frontal, axes x right, y down, z away from the camera.
* A frame's landmarks ``L`` (478, 3, pixels) are fitted as ``L ~ scale * R @ C + t`` on stable landmarks
  (eye corners, nose, forehead, cheekbones: not the mouth, jaw or brows). ``R = Rz(roll) Ry(yaw) Rx(pitch)``
  with the renderer's signs: pitch + nods down, yaw + turns to the viewer's right, roll + clockwise.
* ``aligned = R.T @ (L - t) / scale``: the face with the head motion taken out, in face heights. The
  expression of a frame is ``aligned - rest``, where ``rest`` is the speaker's own closed-mouth face.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from avatar.face.alignment import similarity_fit
from avatar.face.mesh import BROWS, EYE_LOWER, EYE_UPPER, LIPS_INNER_LOWER, LIPS_INNER_UPPER

NUM_FACE_POINTS = 468
STABLE_POINTS = (
    33,
    133,
    362,
    263,
    1,
    4,
    5,
    6,
    168,
    197,
    195,
    10,
    151,
    9,
    8,
    234,
    454,
    127,
    356,
    116,
    345,
    117,
    346,
    6,
    122,
    351,
    196,
    419,
    168,
    193,
    417,
)
"""Landmarks that move with the skull, not with speech: the similarity fit uses only these."""
EYE_POINTS = tuple(sorted({i for eye in EYE_UPPER + EYE_LOWER for i in eye}))
BROW_POINTS = tuple(i for brow in BROWS for i in brow)
IRISES = ((468, 33, 133), (473, 362, 263))
"""(iris centre, outer corner, inner corner) of each eye."""
TEMPLATE_PATH = Path(__file__).with_name("canonical_face.npy")


@lru_cache(maxsize=1)
def canonical_face() -> np.ndarray:
    """The shipped canonical face (478, 3) float32, fitted on the training split by ``fit_template``."""
    return np.load(TEMPLATE_PATH).astype(np.float32)


def rotation_to_euler(rot: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) radians of ``R = Rz(roll) Ry(yaw) Rx(pitch)`` (renderer convention)."""
    # Rx = [[1,0,0],[0,c,-s],[0,s,c]], Ry = [[c,0,-s],[0,1,0],[s,0,c]], Rz = [[c,-s,0],[s,c,0],[0,0,1]]
    yaw = float(np.arcsin(np.clip(rot[2, 0], -1.0, 1.0)))
    pitch = float(np.arctan2(rot[2, 1], rot[2, 2]))
    roll = float(np.arctan2(rot[1, 0], rot[0, 0]))
    return pitch, yaw, roll


def euler_to_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Inverse of ``rotation_to_euler``."""
    cp, sp, cy, sy, cr, sr = (
        np.cos(pitch),
        np.sin(pitch),
        np.cos(yaw),
        np.sin(yaw),
        np.cos(roll),
        np.sin(roll),
    )
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class FaceTracks:
    """Per-frame head pose and expression of one clip (``frames`` = the capture's video frames).

    pose     float32 (frames, 6): pitch, yaw, roll (radians), translation x, y (pixels divided by the
             face height), log face height (pixels)
    aligned  float32 (frames, 478, 3): landmarks with the head motion removed, in face heights
    scale    float32 (frames,): face height in pixels
    valid    bool (frames,): a face was found and fitted
    """

    pose: np.ndarray
    aligned: np.ndarray
    scale: np.ndarray
    valid: np.ndarray


def fit_tracks(landmarks: np.ndarray, template: np.ndarray | None = None) -> FaceTracks:
    """Fit every frame of ``landmarks`` (frames, 478, 3) pixels (NaN where no face) to the template.

    ``pose[:, 3:5]`` is the translation divided by the face height (so it is resolution independent),
    ``pose[:, 5]`` the log of the face height in pixels.
    """
    template = canonical_face() if template is None else template
    stable = list(STABLE_POINTS)
    frames = landmarks.shape[0]
    pose = np.zeros((frames, 6), dtype=np.float32)
    aligned = np.full((frames, landmarks.shape[1], 3), np.nan, dtype=np.float32)
    scale = np.full(frames, np.nan, dtype=np.float32)
    valid = np.isfinite(landmarks).all(axis=(1, 2))
    if valid.any():
        pts = landmarks[valid].astype(np.float64)
        reference = np.broadcast_to(template[stable].astype(np.float64), pts[:, stable].shape)
        s, rot, t = similarity_fit(reference, pts[:, stable])
        pose[valid, :3] = [rotation_to_euler(r) for r in rot]
        pose[valid, 3:5] = t[:, :2] / s[:, None]
        pose[valid, 5] = np.log(s)
        aligned[valid] = ((pts - t[:, None]) @ rot) / s[:, None, None]
        scale[valid] = s
    return FaceTracks(pose, aligned, scale, valid)


def fit_template(landmark_sets: list[np.ndarray], iterations: int = 3) -> np.ndarray:
    """A canonical face (478, 3) from many frames' landmarks (each (n, 478, 3) pixels, finite rows only):
    the mean of the frames aligned to it, iterated (generalised Procrustes), normalised to face height 1
    and centred, with the eye line horizontal."""
    frames = np.concatenate([f[np.isfinite(f).all(axis=(1, 2))] for f in landmark_sets]).astype(np.float64)
    if len(frames) == 0:
        raise ValueError("no frames with a face to fit a template")
    template = frames[0] - frames[0].mean(axis=0)
    stable = list(STABLE_POINTS)
    for _ in range(iterations):
        s, rot, t = similarity_fit(
            np.broadcast_to(template[stable], frames[:, stable].shape), frames[:, stable]
        )
        template = (((frames - t[:, None]) @ rot) / s[:, None, None]).mean(axis=0)
        template -= template[stable].mean(axis=0)
        # Level the eye line, then scale to face height 1.
        eyes = template[263] - template[33]
        angle = np.arctan2(eyes[1], eyes[0])
        c, s_ = np.cos(-angle), np.sin(-angle)
        template = template @ np.array([[c, s_, 0], [-s_, c, 0], [0, 0, 1]])
        template /= np.linalg.norm(template[152, :2] - template[10, :2])
    return template.astype(np.float32)


def mouth_opening(aligned: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap (frames,) in face heights of aligned landmarks (frames, 478, 3)."""
    gaps = aligned[:, list(LIPS_INNER_LOWER[1:-1]), 1] - aligned[:, list(LIPS_INNER_UPPER[1:-1]), 1]
    return np.maximum(gaps, 0.0).mean(axis=1)


def mouth_width(aligned: np.ndarray) -> np.ndarray:
    """Corner-to-corner (61-291) distance (frames,) in face heights."""
    return np.linalg.norm(aligned[:, 291, :2] - aligned[:, 61, :2], axis=-1)


def eye_openness(aligned: np.ndarray) -> np.ndarray:
    """Mean lid gap over eye width of both eyes, (frames,) (about 0.25-0.35 open, < 0.1 closed)."""
    out = np.zeros(aligned.shape[0], dtype=np.float64)
    for upper, lower in zip(EYE_UPPER, EYE_LOWER, strict=True):
        gap = (aligned[:, list(lower[2:-2]), 1] - aligned[:, list(upper[2:-2]), 1]).mean(axis=1)
        width = np.linalg.norm(aligned[:, upper[0], :2] - aligned[:, upper[-1], :2], axis=-1)
        out += gap / np.maximum(width, 1e-6) / 2.0
    return out


def gaze(aligned: np.ndarray) -> np.ndarray:
    """Iris centre relative to its eye corners' midpoint over eye width, mean of both eyes, (frames, 2)."""
    out = np.zeros((aligned.shape[0], 2), dtype=np.float64)
    for iris, outer, inner in IRISES:
        mid = (aligned[:, outer, :2] + aligned[:, inner, :2]) / 2.0
        width = np.linalg.norm(aligned[:, outer, :2] - aligned[:, inner, :2], axis=-1, keepdims=True)
        out += (aligned[:, iris, :2] - mid) / np.maximum(width, 1e-6) / 2.0
    return out


def closed_mouth_rest(aligned: np.ndarray, valid: np.ndarray, quantile: float = 0.15) -> np.ndarray:
    """The speaker's rest face (478, 3): the median aligned face over their most-closed-mouth frames."""
    idx = np.flatnonzero(valid)
    opening = mouth_opening(aligned[idx])
    closed = idx[opening <= np.quantile(opening, quantile)]
    return np.median(aligned[closed], axis=0).astype(np.float32)
