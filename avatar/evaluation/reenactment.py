"""Self-reenactment against the real video: the generated face mesh compared with the real speaker's.

Both clips are tracked with MediaPipe's face mesh and put on the same frame grid (the output fps; the
real clip is resampled to it by nearest frame). A frame where either mesh is missing (no face found, or
past the end of the real clip) is left out of every measure and counted in ``gt_frames_excluded``.

Lengths are in face heights (forehead top 10 to chin 152 of the frame's own face), angles in degrees,
lags in milliseconds (positive: the generated track follows the real one).
"""

from __future__ import annotations

import numpy as np

from avatar.evaluation.life import head_angles
from avatar.evaluation.mouth_track import detected, face_height, mouth_openness
from avatar.evaluation.sync import best_lag_correlation
from avatar.face.alignment import similarity_fit
from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER, LIPS_OUTER_LOWER, LIPS_OUTER_UPPER
from avatar.motion.canonical import fit_tracks
from avatar.motion.prepare import turned_or_unfitted

GT_MAX_LAG_MS = 120.0
"""Mouth opening and width correlations take the best lag within ± this many milliseconds."""

MOUTH_LEFT, MOUTH_RIGHT = 61, 291
"""Outer lip corners (image left, image right)."""

LIP_POINTS: tuple[int, ...] = tuple(
    dict.fromkeys(LIPS_OUTER_UPPER + LIPS_OUTER_LOWER + LIPS_INNER_UPPER + LIPS_INNER_LOWER)
)
"""The 40 lip landmarks (outer and inner contours, corners once) whose distance is the LMD."""

ALIGN_POINTS: tuple[int, ...] = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1)
"""Landmarks the per-frame similarity fit uses: eye corners and the nose (bridge to tip), none of which
moves with the mouth."""

CLOSED_FRACTION = 0.25
CLOSED_PERCENTILE = 95.0
"""Lips count as closed in a frame when the mouth opening is below ``CLOSED_FRACTION`` times the
``CLOSED_PERCENTILE``-th percentile of that same track's opening (each track, real or generated, is
judged against its own scale, so a mesh that never reads a gap of exactly 0 still shows closures)."""

MIN_POSE_FRAMES = 8
"""Fewer frames with a face than this give no head-pose spread."""


def mouth_width(landmarks: np.ndarray) -> np.ndarray:
    """Outer lip corner distance (61 to 291) over face height, shape (frames,); NaN where no face.

    About 0.35-0.45 at rest; spreading (/i/) widens it, rounding (/u/, /o/) narrows it."""
    width = np.linalg.norm(landmarks[:, MOUTH_LEFT, :2] - landmarks[:, MOUTH_RIGHT, :2], axis=-1)
    height = face_height(landmarks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(height > 0, width / height, np.nan)


def closed_lips(opening: np.ndarray) -> np.ndarray:
    """Bool (frames,): frames whose mouth opening (face heights, NaN = no face) is below
    ``CLOSED_FRACTION`` of the track's own ``CLOSED_PERCENTILE``-th percentile; False where NaN."""
    opening = np.asarray(opening, dtype=np.float64)
    finite = np.isfinite(opening)
    if not finite.any():
        return np.zeros(len(opening), dtype=bool)
    threshold = CLOSED_FRACTION * float(np.percentile(opening[finite], CLOSED_PERCENTILE))
    with np.errstate(invalid="ignore"):
        return finite & (opening < threshold)


def closed_share(opening: np.ndarray) -> float | None:
    """Share (0-1) of the frames with a face whose lips are closed (``closed_lips``); None if none."""
    finite = np.isfinite(np.asarray(opening, dtype=np.float64))
    return float(closed_lips(opening)[finite].mean()) if finite.any() else None


def lip_distance(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-frame LMD (frames,): mean Euclidean distance of the 40 ``LIP_POINTS`` of ``generated`` to those
    of ``real``, after a 2-D similarity fit of ``generated``'s ``ALIGN_POINTS`` onto ``real``'s, in real
    face heights. Both (frames, 478, 2|3) pixels on the same frame grid; NaN where either has no face.

    No per-clip mean mouth shape is removed: a generated mouth that keeps the portrait's shape while
    the real one talks, or rests wider than the real one, scores a larger distance (the standard LMD).
    """
    frames = min(len(generated), len(real))
    out = np.full(frames, np.nan)
    gen = generated[:frames, :, :2].astype(np.float64)
    ref = real[:frames, :, :2].astype(np.float64)
    ok = detected(gen) & detected(ref)
    if not ok.any():
        return out
    gen, ref = gen[ok], ref[ok]
    scale, rotation, translation = similarity_fit(gen[:, ALIGN_POINTS], ref[:, ALIGN_POINTS])
    lips = scale[:, None, None] * np.einsum("fij,fnj->fni", rotation, gen[:, LIP_POINTS])
    lips += translation[:, None, :]
    distance = np.linalg.norm(lips - ref[:, LIP_POINTS], axis=-1).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[ok] = distance / face_height(ref)
    return out


def head_pose_std(landmarks: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Standard deviation (degrees) of head (pitch, yaw, roll) over the frames with a face, from
    ``life.head_angles`` (rigid fit of stable points to the clip's median face); None with fewer than
    ``MIN_POSE_FRAMES`` such frames."""
    angles = head_angles(landmarks)
    ok = np.isfinite(angles).all(axis=1)
    if ok.sum() < MIN_POSE_FRAMES:
        return None, None, None
    std = angles[ok].std(axis=0)
    return float(std[0]), float(std[1]), float(std[2])


def _ratio(value: float | None, reference: float | None, floor: float = 1e-3) -> float | None:
    if value is None or reference is None or reference < floor:
        return None
    return value / reference


def unreliable_truth(real: np.ndarray) -> np.ndarray:
    """Frames (bool (frames,)) of a real clip's face mesh ``real`` (frames, 478, 3) pixels, NaN where no
    face, whose lips cannot be trusted as ground truth: the face turned into profile or fitting the
    canonical face badly, by the thresholds ``prepare-motion`` drops training frames with."""
    profile, unfitted = turned_or_unfitted(fit_tracks(real))
    return profile | unfitted


def compare_to_truth(generated: np.ndarray, real: np.ndarray, fps: float) -> dict[str, float | int | None]:
    """Measures of a generated clip against the real one it re-enacts.

    ``generated``, ``real``: landmarks (frames, 478, 3) pixels on the same ``fps`` grid (each in its own
    image), NaN where no face; the shorter length is used. Frames missing a face in either are excluded
    from every measure, and so are frames where the real face's mesh cannot be trusted
    (``unreliable_truth``, counted in ``gt_frames_unreliable``); ``gt_frames_excluded`` counts both,
    ``gt_frames`` is what is left. Returns:

    * ``gt_r`` / ``gt_lag_ms``: Pearson r of the mouth opening (inner-lip gap 13-14 / face height) at the
      best lag within ±``GT_MAX_LAG_MS``; ``gt_width_r`` / ``gt_width_lag_ms`` the same for the mouth width
      (corners 61-291 / face height);
    * ``lip_closure_recall``: share of the real closed-lip frames (``closed_lips``) also closed in the
      output (None when the real speaker never closes); ``real_closed_frames`` how many there were;
    * ``lmd``: mean ``lip_distance`` (face heights);
    * ``head_{pitch,yaw,roll}_std_ratio``: the output's head-angle standard deviation over the real one's
      over the same frames (1 = as lively as the real head; None when the real head is still, < 0.001°).
    """
    frames = min(len(generated), len(real))
    generated, real = generated[:frames], real[:frames]
    found = detected(generated) & detected(real)
    untrusted = found & unreliable_truth(real)
    ok = found & ~untrusted
    gen = np.where(ok[:, None, None], generated, np.nan)
    ref = np.where(ok[:, None, None], real, np.nan)
    gen_open, ref_open = mouth_openness(gen), mouth_openness(ref)
    opening = best_lag_correlation(gen_open, ref_open, fps, GT_MAX_LAG_MS)
    width = best_lag_correlation(mouth_width(gen), mouth_width(ref), fps, GT_MAX_LAG_MS)
    real_closed = closed_lips(ref_open)
    both_closed = real_closed & closed_lips(gen_open)
    lmd = lip_distance(gen, ref)
    gen_pose, ref_pose = head_pose_std(gen), head_pose_std(ref)
    return {
        "gt_frames": int(ok.sum()),
        "gt_frames_excluded": int(frames - ok.sum()),
        "gt_frames_unreliable": int(untrusted.sum()),
        "gt_r": opening.r,
        "gt_lag_ms": opening.lag_ms,
        "gt_width_r": width.r,
        "gt_width_lag_ms": width.lag_ms,
        "real_closed_frames": int(real_closed.sum()),
        "lip_closure_recall": float(both_closed.sum() / real_closed.sum()) if real_closed.any() else None,
        "lmd": float(np.nanmean(lmd)) if np.isfinite(lmd).any() else None,
        "head_pitch_std_ratio": _ratio(gen_pose[0], ref_pose[0]),
        "head_yaw_std_ratio": _ratio(gen_pose[1], ref_pose[1]),
        "head_roll_std_ratio": _ratio(gen_pose[2], ref_pose[2]),
    }
