"""Retargeting of learned face-shape offsets (``FaceMotion.expression``) onto one portrait.

The offsets come in face heights, in the face's own frame (x along the eye line, y toward the chin),
for an average face. Per frame they are scaled to the portrait (face height; across the mouth also by
how wide the portrait's mouth is), rotated into image pixels along the portrait's eye line, masked
around the eyes (blinks stay the ``blink`` scalar) and made safe: the opening of the mouth is limited
like the jaw's, and the inner lips never cross. NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.face.mesh import (
    EYE_LOWER,
    EYE_UPPER,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    NUM_FACE_POINTS,
)
from avatar.face.motion_types import CANONICAL_MOUTH_WIDTH

EXPRESSION_LIMIT = 0.25
"""Largest offset of one landmark, in face heights (``clean_expression`` clips longer ones)."""
MOUTH_SCALE_RANGE = (0.7, 1.4)
"""Bounds of the across-the-mouth scale (portrait mouth width / canonical mouth width)."""
EYE_FREE = 0.04
"""Offsets fade in over this distance from the nearest eyelid landmark, in face heights."""
LIP_FALLOFF = 0.06
"""The no-crossing correction of the lips fades out over this distance above / below them, in face
heights."""
LOWER_FACE = (-0.3, -0.2)
"""Face-height positions along y relative to the mouth corners over which the opening limit fades in
(the eyes sit near -0.4, the nose tip near -0.1): it scales the lower face, not the brows."""

_UP_IN = np.array(LIPS_INNER_UPPER)
_LOW_IN = np.array(LIPS_INNER_LOWER)


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def eye_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (2,) of the face frame in the image (dtype of ``landmarks`` (>= 468, 2), pixels):
    ``ex`` from the image-left eye centre (33/133) to the image-right one (263/362), ``ey``
    perpendicular to it, pointing down toward the chin."""
    eye_l = (landmarks[33] + landmarks[133]) / 2
    eye_r = (landmarks[263] + landmarks[362]) / 2
    ex = (eye_r - eye_l) / max(np.linalg.norm(eye_r - eye_l), 1e-6)
    return ex, np.array([-ex[1], ex[0]])


@dataclass(frozen=True)
class RigMetrics:
    """What retargeting needs to know about a portrait (pixels unless stated)."""

    face_height: float
    """Landmark 10 to 152 distance."""
    mouth_width: float
    """Mouth corner 61 to 291 distance."""
    ex: np.ndarray
    """float64 (2,) unit vector of the face frame's x axis in the image (see ``eye_axes``)."""
    ey: np.ndarray
    """float64 (2,) unit vector of the face frame's y axis (toward the chin)."""
    rest_gaps: np.ndarray
    """float64 (11,) inner-lip gaps at rest along ``ey`` (lower minus upper), corner to corner."""
    max_gap: float
    """Largest inner-lip gap an expression may open (the jaw's at jaw_open = 1)."""
    eye_weight: np.ndarray
    """float64 (468,) 0 on the eyelids .. 1 from ``EYE_FREE`` away: how much of an offset applies."""
    lower_face: np.ndarray
    """float64 (468,) 1 on the mouth and jaw .. 0 at the eyes: the part an opening limit scales."""
    pair_x: np.ndarray
    """float64 (11,) position of the inner-lip pairs along ``ex``, increasing."""
    pair_order: np.ndarray
    """int (11,) order sorting the pairs (``LIPS_INNER_UPPER`` order) by ``pair_x``."""
    landmark_x: np.ndarray
    """float64 (468,) position of the landmarks along ``ex``."""
    upper_side: np.ndarray
    """float64 (468,) 1 on the upper lip, fading out above it over ``LIP_FALLOFF``; 0 below."""
    lower_side: np.ndarray
    """float64 (468,) 1 on the lower lip, fading out below it over ``LIP_FALLOFF``; 0 above."""

    @property
    def mouth_scale(self) -> float:
        """Factor on the x offsets: (mouth width / face height) / ``CANONICAL_MOUTH_WIDTH``, clipped."""
        ratio = self.mouth_width / max(self.face_height, 1e-6) / CANONICAL_MOUTH_WIDTH
        return float(np.clip(ratio, *MOUTH_SCALE_RANGE))


def rig_metrics(landmarks: np.ndarray, max_gap: float) -> RigMetrics:
    """Retargeting metrics of a portrait from its landmarks (>= 468, 2) in pixels.

    ``max_gap``: the largest inner-lip gap along ``ey`` in pixels (the renderer passes its jaw's gap
    at jaw_open = 1: ``JAW_GAP`` face heights, at most ``MAX_GAP_PER_HALF_WIDTH`` half mouth widths).
    """
    lm = np.asarray(landmarks, dtype=np.float64)[:NUM_FACE_POINTS, :2]
    height = max(float(np.linalg.norm(lm[10] - lm[152])), 1.0)
    ex, ey = eye_axes(lm)
    mouth = (lm[61] + lm[291]) / 2
    x, y = (lm - mouth) @ ex, (lm - mouth) @ ey
    lids = np.array([i for part in EYE_UPPER + EYE_LOWER for i in part])
    to_lid = np.min(np.linalg.norm(lm[:, None, :] - lm[None, lids, :], axis=2), axis=1)
    pair_x = (x[_UP_IN] + x[_LOW_IN]) / 2
    order = np.argsort(pair_x, kind="stable")
    upper_side, lower_side = _lip_sides(x, y, height)
    return RigMetrics(
        face_height=height,
        mouth_width=float(np.linalg.norm(lm[291] - lm[61])),
        ex=ex,
        ey=ey,
        rest_gaps=(lm[_LOW_IN] - lm[_UP_IN]) @ ey,
        max_gap=float(max_gap),
        eye_weight=_smoothstep(0.0, EYE_FREE * height, to_lid),
        lower_face=_smoothstep(LOWER_FACE[0], LOWER_FACE[1], y / height),
        pair_x=pair_x[order],
        pair_order=order,
        landmark_x=x,
        upper_side=upper_side,
        lower_side=lower_side,
    )


def _lip_sides(x: np.ndarray, y: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (468,) of the upper and the lower side of the mouth from face-frame positions (pixels).

    A landmark belongs to the upper side when it lies above the line midway between the inner lips
    (at its own x); it takes weight 1 up to the outer upper lip contour and fades out above it.
    """

    def contour(indices: tuple[int, ...]) -> np.ndarray:
        order = np.argsort(x[list(indices)], kind="stable")
        return np.interp(x, x[list(indices)][order], y[list(indices)][order])

    middle = (contour(LIPS_INNER_UPPER) + contour(LIPS_INNER_LOWER)) / 2
    reach = LIP_FALLOFF * height
    upper = np.where(y <= middle, 1.0 - _smoothstep(0.0, reach, contour(LIPS_OUTER_UPPER) - y), 0.0)
    lower = np.where(y > middle, 1.0 - _smoothstep(0.0, reach, y - contour(LIPS_OUTER_LOWER)), 0.0)
    # the inner contours meet on a closed mouth: assign them explicitly (the corners stay up)
    upper[list(LIPS_INNER_LOWER[1:-1])], lower[list(LIPS_INNER_LOWER[1:-1])] = 0.0, 1.0
    upper[list(LIPS_INNER_UPPER)], lower[list(LIPS_INNER_UPPER)] = 1.0, 0.0
    return upper, lower


def clean_expression(expression: np.ndarray) -> np.ndarray:
    """``expression`` as float32 (468, 2) with non-finite values set to 0 and every landmark's offset
    at most ``EXPRESSION_LIMIT`` face heights long. Raises ValueError on any other shape."""
    e = np.array(expression, dtype=np.float32)  # a copy: the caller's array is never changed
    if e.shape != (NUM_FACE_POINTS, 2):
        raise ValueError(f"FaceMotion.expression must have shape ({NUM_FACE_POINTS}, 2), not {e.shape}")
    e[~np.isfinite(e)] = 0.0
    length = np.sqrt((e.astype(np.float64) ** 2).sum(axis=1))
    too_long = length > EXPRESSION_LIMIT
    if too_long.any():
        e[too_long] *= (EXPRESSION_LIMIT / length[too_long])[:, None].astype(np.float32)
    return e


def retarget_expression(expression: np.ndarray, metrics: RigMetrics,
                        base_gaps: np.ndarray | None = None) -> np.ndarray:
    """Pixel offsets float64 (468, 2), image x/y, of the face landmarks for ``expression``.

    ``expression``: float (468, 2) face-frame offsets in face heights (``FaceMotion.expression``;
    cleaned here too). ``base_gaps``: float (11,) inner-lip gaps in pixels along ``ey`` that the rest
    of the motion already makes (default: the rest gaps); the opening limit and the no-crossing rule
    apply to these gaps plus the expression's.
    """
    e = clean_expression(expression).astype(np.float64) * metrics.face_height
    e[:, 0] *= metrics.mouth_scale
    e *= metrics.eye_weight[:, None]
    offsets = np.outer(e[:, 0], metrics.ex) + np.outer(e[:, 1], metrics.ey)
    base = metrics.rest_gaps if base_gaps is None else np.asarray(base_gaps, dtype=np.float64)
    offsets = _limit_opening(offsets, metrics, base)
    return _uncross_lips(offsets, metrics, base)


def _opening(offsets: np.ndarray, ey: np.ndarray) -> np.ndarray:
    """Change (11,) of the inner-lip gaps along ``ey`` that ``offsets`` (468, 2) make, pixels."""
    return (offsets[_LOW_IN] - offsets[_UP_IN]) @ ey


def _limit_opening(offsets: np.ndarray, metrics: RigMetrics, base: np.ndarray) -> np.ndarray:
    """Scale the lower-face offsets down so that no inner-lip gap opens past ``metrics.max_gap``."""
    delta = _opening(offsets, metrics.ey)
    over = (delta > 1e-9) & (base + delta > metrics.max_gap)
    if not over.any():
        return offsets
    scale = float(np.clip(np.min((metrics.max_gap - base[over]) / delta[over]), 0.0, 1.0))
    return offsets * (1.0 - (1.0 - scale) * metrics.lower_face)[:, None]


def _uncross_lips(offsets: np.ndarray, metrics: RigMetrics, base: np.ndarray) -> np.ndarray:
    """Scale down the motion along ``ey`` of the lips (and, fading out, of the skin above and below
    them) where the inner lips would cross, column by column across the mouth, until every gap is at
    least 0 (or what it was without the expression, if that was less).

    Scaling rather than pushing the lips apart keeps each lip's thickness between its rest thickness
    and the expression's, so the correction itself cannot fold a lip over.
    """
    delta = _opening(offsets, metrics.ey)
    floor = np.minimum(base, 0.0)
    crossing = (delta < 0) & (base + delta < floor)
    if not crossing.any():
        return offsets
    keep = np.ones(len(delta))
    keep[crossing] = np.clip((base[crossing] - floor[crossing]) / -delta[crossing], 0.0, 1.0)
    column = np.interp(metrics.landmark_x, metrics.pair_x, keep[metrics.pair_order])
    factor = 1.0 - (1.0 - column) * np.maximum(metrics.upper_side, metrics.lower_side)
    factor[_UP_IN], factor[_LOW_IN] = keep, keep  # exact on the inner contours
    along_y = offsets @ metrics.ey
    return offsets - np.outer((1.0 - factor) * along_y, metrics.ey)


def without_opening(offsets: np.ndarray, metrics: RigMetrics) -> np.ndarray:
    """``offsets`` (468, 2) pixels with the lower lip following the upper lip: the inner-lip gaps stay
    at rest (the real mouth interior of an open portrait, warped with the jaw at rest)."""
    relative = offsets[_LOW_IN] - offsets[_UP_IN]  # (11, 2)
    order = metrics.pair_order
    across = np.interp(metrics.landmark_x, metrics.pair_x, relative[order, 0])
    down = np.interp(metrics.landmark_x, metrics.pair_x, relative[order, 1])
    result = offsets - np.column_stack([across, down]) * metrics.lower_side[:, None]
    result[_LOW_IN] = offsets[_UP_IN]
    return result
