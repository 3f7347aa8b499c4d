"""Mesh-warp renderer: FaceMotion -> displaced mesh vertices -> backward warp -> mouth interior.

Per frame:

1. ``MotionModel`` turns the motion into vertex displacements from weights precomputed once per
   portrait (jaw, lips, eyelids, brows), adds the learned full face shape (``FaceMotion.expression``,
   retargeted to the portrait by ``retarget.py``; the first rings outside the face oval follow it),
   then a 3D head rotation about the neck with falloff into hair and neck, the background ring fixed.
2. The backward map is built on a coarse grid (every 4 px at 512): the forward field is interpolated
   with rest-pose barycentrics and inverted by fixed-point iteration; triangles that deform strongly
   are rasterised and inverted exactly. Around the mouth and the eyes, a fine grid is always inverted
   exactly (the inverse stays continuous where lips part and lids close). All exact inversions of a
   frame (with the jaw-at-rest one below) are one vectorised pass (``mesh.exact_offsets_at``).
3. The map is upsampled with ``cv2.resize`` and the moving part of the image warped with one
   ``cv2.remap`` (the portrait as RGBA, the offsets as they are: OpenCV's fastest bilinear path);
   closing lids are sealed and the mouth interior is composited (``mouth.py``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from functools import lru_cache

import cv2
import numpy as np

from avatar.face.mesh import (
    BROWS,
    CHIN,
    EYE_LOWER,
    EYE_UPPER,
    FACE_OVAL,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    NUM_FACE_POINTS,
    RING_SCALES,
    NodeValues,
    WarpGrid,
    corner_bounds,
    exact_offsets_at,
)
from avatar.face.motion_types import FaceMotion
from avatar.face.mouth import MouthPainter
from avatar.face.portrait import PortraitRig
from avatar.face.retarget import (
    clean_expression,
    eye_axes,
    retarget_expression,
    rig_metrics,
    without_opening,
)
from avatar.stopwatch import Stopwatch

JAW_GAP = 0.18
"""Inner-lip gap at jaw_open = 1, in face heights (FaceMotion's convention)."""
MAX_GAP_PER_HALF_WIDTH = 1.3
"""Narrow mouths open less: at jaw_open = 1 the inner-lip gap is at most this many half mouth widths
(a wide-open "a" is about two thirds as tall as the mouth is wide; taller reads as a hole)."""
BROW_LIFT = 0.04
"""Brow rise at brow_raise = 1, in face heights."""
BREATH_PX_AT_512 = 1.5
"""Shoulder lift at breath = +-1 for a 512 px frame."""
MAX_HEAD_ANGLE = 0.25
STEEP_WARP = 0.35
"""Triangles whose warp Jacobian differs from identity by more than this are inverted exactly."""
LID_COVER = 0.08
"""At blink = 1 the lids meet this fraction of the eye opening below the lower-lid landmarks."""
RING_FOLLOW = (1.0, 1.7)
"""Ring points outside the face oval take 1 - smoothstep(lo, hi, ring scale) of the expression offset
of their oval landmark (about 0.92, 0.61, 0.05 on the first three rings, like the jaw's falloff), so
the chin and the jaw line move the neck with them instead of tearing from it."""


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def clamp_motion(motion: FaceMotion) -> FaceMotion:
    """A copy of ``motion`` with every value finite and inside its documented range.

    ``expression`` is copied as float32 (468, 2) with non-finite offsets set to 0 and each landmark's
    offset at most ``retarget.EXPRESSION_LIMIT`` face heights long (ValueError on another shape).
    """

    def c(value: float, lo: float, hi: float) -> float:
        value = float(value)
        return min(max(value, lo), hi) if math.isfinite(value) else 0.0

    a = MAX_HEAD_ANGLE
    m = motion
    expression = None if m.expression is None else clean_expression(m.expression)
    return FaceMotion(c(m.jaw_open, 0, 1), c(m.lip_width, -1, 1), c(m.lip_press, 0, 1), c(m.blink, 0, 1),
                      c(m.brow_raise, 0, 1), c(m.head_pitch, -a, a), c(m.head_yaw, -a, a),
                      c(m.head_roll, -a, a), c(m.breath, -1, 1), c(m.close_rest, 0, 1), expression)


class MotionModel:
    """Per-vertex weights turning a FaceMotion into forward displacements (V, 2) in pixels."""

    def __init__(self, rig: PortraitRig) -> None:
        mesh = rig.mesh
        lm = rig.landmarks
        verts = mesh.vertices.astype(np.float64)
        self.height = height = rig.face_height
        ex, ey = eye_axes(lm)
        self.ex, self.ey = ex, ey
        corners = np.array([(lm[61] + lm[78]) / 2, (lm[291] + lm[308]) / 2], dtype=np.float64)
        mouth = corners.mean(axis=0)
        half = max(float(np.linalg.norm(corners[1] - corners[0]) / 2), 1.0)
        rel = verts - mouth
        u, v = rel @ ex / half, rel @ ey / height
        n = len(verts)

        # --- jaw: lower lip, chin and jaw line move down; corners follow partly -------------------
        up_in, low_in = list(LIPS_INNER_UPPER), list(LIPS_INNER_LOWER)
        self.rest_gaps = np.maximum((lm[low_in] - lm[up_in]) @ ey, 0.0)
        self.rest_center_gap = rest_center_gap = float(self.rest_gaps[5])
        """Pixels: the portrait's resting inner-lip gap at the mouth's centre; ``close_rest`` = 1 lifts the
        jaw field by this much (closing the resting opening)."""
        # Narrow mouths (or mouths hidden under a moustache) open less: an opening much taller than
        # the mouth is wide reads as a hole, not a mouth.
        target_gap = min(JAW_GAP * height, MAX_GAP_PER_HALF_WIDTH * half)
        self.jaw_travel = max(target_gap - rest_center_gap, 0.04 * height)
        self.metrics = rig_metrics(lm, max_gap=rest_center_gap + self.jaw_travel)
        self.all_up_in, self.all_low_in = np.array(up_in), np.array(low_in)
        corner_d = np.min(np.linalg.norm(verts[:, None, :] - corners[None], axis=2), axis=1)
        corner_w = 0.35 * np.exp(-0.5 * (corner_d / (0.4 * half)) ** 2)
        upper_lip, lower_lip = self._lip_regions(verts, lm)
        inner_half = max(float(np.linalg.norm(lm[308] - lm[78]) / 2), 1.0) / half
        lens_inner = np.sqrt(np.clip(1.0 - (u / inner_half) ** 2, 0.0, 1.0))
        ramp = 0.02 + 0.13 * _smoothstep(0.6, 1.3, np.abs(u))
        chin_v = float((lm[CHIN] - mouth) @ ey / height)
        below = (_smoothstep(0.0, 1.0, v / ramp) * (1.0 - _smoothstep(0.8, 2.6, np.abs(u)))
                 * (1.0 - _smoothstep(chin_v, chin_v + 0.35, v)))
        jaw = np.where(v > 0, below, 0.0)
        jaw[lower_lip] = np.maximum(lens_inner[lower_lip], jaw[lower_lip] * (np.abs(u[lower_lip]) > 1))
        jaw[upper_lip] = 0.0
        jaw = np.maximum(jaw, corner_w)
        self.jaw = jaw
        self.corner_pull = -0.1 * half * np.sign(u) * corner_w / 0.35  # corners move inward, pixels

        # --- lips: width (spread / round), pout, press --------------------------------------------
        self.mouth_scale = rel @ ex * np.exp(-0.5 * ((u / 1.5) ** 2 + (v / 0.08) ** 2))
        self.smile = -0.02 * height * corner_w / 0.35
        pout = np.zeros(n)
        lens_outer = np.clip(1.0 - u**2, 0.0, 1.0)
        pout[upper_lip] = -lens_outer[upper_lip]
        pout[lower_lip] = lens_outer[lower_lip]
        pout[up_in + low_in] = 0.0
        self.pout = 0.02 * height * pout
        self.up_in, self.low_in = np.array(up_in[1:-1]), np.array(low_in[1:-1])
        self.up_out, self.low_out = np.array(LIPS_OUTER_UPPER[1:-1]), np.array(LIPS_OUTER_LOWER[1:-1])
        self.thick_up = np.maximum((lm[self.up_in] - lm[self.up_out]) @ ey, 0.0)
        self.thick_low = np.maximum((lm[self.low_out] - lm[self.low_in]) @ ey, 0.0)

        # --- eyes and brows ------------------------------------------------------------------------
        self.blink = np.zeros(n)
        self.brow = np.zeros(n)
        for upper, lower, brow in zip(EYE_UPPER, EYE_LOWER, BROWS, strict=True):
            self._eye_weights(verts, lm, np.array(upper), np.array(lower), np.array(brow))

        # --- head rotation: full on the face, fading over the rings into hair and neck ------------
        level = mesh.ring_level
        scales = np.array([0.0, 1.0, *RING_SCALES])
        weights = np.array([1.0, 1.0, 1.0, 0.88, 0.62, 0.3, 0.0])
        self.head = np.interp(level, scales, weights)
        far = level >= RING_SCALES[-1]  # the background never moves
        for local in (self.jaw, self.corner_pull, self.mouth_scale, self.smile, self.pout, self.blink,
                      self.brow):
            local[far] = 0.0
        self.points3d = np.column_stack([verts, self._relief(verts, mesh.depth, level)])
        follow = 1.0 - _smoothstep(RING_FOLLOW[0], RING_FOLLOW[1], level)
        self.ring_dst = np.flatnonzero((level > 0) & (follow > 0))
        self.ring_src = np.tile(np.array(FACE_OVAL), len(RING_SCALES) + 1)[self.ring_dst - NUM_FACE_POINTS]
        self.ring_follow = follow[self.ring_dst]
        self.pivot = np.array([*(lm[CHIN] + 0.25 * height * ey), 0.0])
        self._points_from_pivot = self.points3d - self.pivot
        self._head_column = np.ascontiguousarray(self.head[:, None])
        self.sway = 0.12 * height  # head translation per radian of pitch / yaw, pixels

    @staticmethod
    def _relief(verts: np.ndarray, depth: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Depth in front of the face outline (<= 0, pixels), tapering to 0 at the oval and beyond.

        Measuring depth from the outline (interpolated by inverse distance) rather than from one pivot,
        and fading it out near the outline, keeps yaw and pitch from folding the face over its border
        (a 2D warp cannot show the far cheek turning out of sight).
        """
        oval = np.array(FACE_OVAL)
        d2 = ((verts[:, None, :] - verts[oval][None]) ** 2).sum(axis=2) + 1.0
        weights = 1.0 / d2**2
        reference = (weights * depth[oval][None]).sum(axis=1) / weights.sum(axis=1)
        center = verts[oval].mean(axis=0)
        rel, rel_oval = verts - center, verts[oval] - center
        angle = np.arctan2(rel[:, 1], rel[:, 0])
        oval_angle = np.arctan2(rel_oval[:, 1], rel_oval[:, 0])
        order = np.argsort(oval_angle)
        radius = np.interp(angle, oval_angle[order], np.linalg.norm(rel_oval, axis=1)[order],
                           period=2 * np.pi)
        rho = np.linalg.norm(rel, axis=1) / np.maximum(radius, 1.0)
        relief = np.minimum(depth - reference, 0.0) * (1.0 - _smoothstep(0.55, 1.0, rho))
        relief[level > 0] = 0.0
        return relief

    @staticmethod
    def _lip_regions(verts: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of vertices on the upper and on the lower lip (contours included)."""
        def inside(polygon: np.ndarray) -> np.ndarray:
            poly = polygon.astype(np.float32).reshape(-1, 1, 2)
            return np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), True) >= -0.5
                             for x, y in verts[:468]] + [False] * (len(verts) - 468))

        upper = inside(np.concatenate([lm[list(LIPS_OUTER_UPPER)], lm[list(LIPS_INNER_UPPER)][::-1]]))
        lower = inside(np.concatenate([lm[list(LIPS_OUTER_LOWER)], lm[list(LIPS_INNER_LOWER)][::-1]]))
        contour_up = list(LIPS_INNER_UPPER + LIPS_OUTER_UPPER)
        contour_low = list(LIPS_INNER_LOWER[1:-1] + LIPS_OUTER_LOWER[1:-1])
        upper[contour_low] = False  # a closed mouth puts both inner contours on the same line
        lower[contour_up] = False  # the corners stay with the upper lip
        upper[contour_up] = True
        lower[contour_low] = True
        lower &= ~upper
        return upper, lower

    def _eye_weights(self, verts: np.ndarray, lm: np.ndarray, upper: np.ndarray, lower: np.ndarray,
                     brow: np.ndarray) -> None:
        """Add one eye's blink weights (pixels down at blink = 1) and brow weights (0..1 of the lift).

        The upper-lid margin travels the eye opening (plus ``LID_COVER``); the lid skin above it
        follows with a falloff that reaches 0 at the brow, so the closed lid is stretched skin.
        """
        ex, ey = self.ex, self.ey
        center = (lm[upper[0]] + lm[upper[-1]]) / 2
        half = max(float(np.linalg.norm(lm[upper[-1]] - lm[upper[0]]) / 2), 1.0)
        rel = verts - center
        u, v = rel @ ex / half, rel @ ey
        up_u, up_v = _sorted_xy((lm[upper] - center) @ ex / half, (lm[upper] - center) @ ey)
        low_u, low_v = _sorted_xy((lm[lower] - center) @ ex / half, (lm[lower] - center) @ ey)
        gap = np.maximum(np.interp(u, low_u, low_v) - np.interp(u, up_u, up_v), 0.0)
        gap *= np.abs(u) < 1.0
        above = np.interp(u, up_u, up_v) - v  # pixels above the upper lid margin
        under = v - np.interp(u, low_u, low_v)  # pixels below the lower lid margin
        lid_to_brow = max(float((lm[upper[4]] - lm[brow[5:]].mean(axis=0)) @ ey), 1.4 * gap.max(), 1.0)
        across = 1.0 - _smoothstep(0.9, 1.5, np.abs(u))
        lid = np.where(above >= 0, 1.0 - _smoothstep(0.0, lid_to_brow, above), 0.0) * across
        low = np.where(under >= 0, 1.0 - _smoothstep(0.0, 0.5 * lid_to_brow, under), 0.0) * across
        # The lids meet a little below the lower-lid landmarks (both margins move down), which also
        # hides eye white that the landmarks leave outside on drawn and cartoon eyes.
        blink = (1.0 + LID_COVER) * gap * lid + LID_COVER * gap * low
        blink[upper[1:-1]] = (1.0 + LID_COVER) * gap[upper[1:-1]]
        blink[lower[1:-1]] = LID_COVER * gap[lower[1:-1]]
        blink[upper[[0, -1]]] = 0.0
        self.blink += blink
        brow_across = 1.0 - _smoothstep(1.2, 2.2, np.abs(u))
        rise = np.where(above <= lid_to_brow, _smoothstep(0.0, lid_to_brow, above),
                        1.0 - _smoothstep(lid_to_brow, lid_to_brow + 0.5 * self.height, above))
        self.brow = np.maximum(self.brow, np.where(above > 0, rise, 0.0) * brow_across)

    def displacements(self, m: FaceMotion, jaw_at_rest: bool = False) -> np.ndarray:
        """Forward displacement (V, 2) in pixels of every mesh vertex for a clamped motion.

        ``jaw_at_rest``: keep the inner-lip gaps of ``m.expression`` at rest (the lower lip follows the
        upper one), for warping the real interior of an open portrait mouth.
        """
        ex, ey = self.ex, self.ey
        down = self.jaw * (m.jaw_open * self.jaw_travel - m.close_rest * self.rest_center_gap)
        across = self.corner_pull * m.jaw_open
        across += self.mouth_scale * (0.14 * m.lip_width if m.lip_width > 0 else 0.3 * m.lip_width)
        down += self.smile * max(m.lip_width, 0.0) + self.pout * max(-m.lip_width, 0.0)
        down += self.blink * m.blink - self.brow * (BROW_LIFT * self.height * m.brow_raise)
        if m.expression is not None and m.expression.any():
            self._add_expression(m.expression, across, down, jaw_at_rest)
        if m.lip_press > 0:
            gaps = self.rest_gaps[1:-1] + (down[self.low_in] - down[self.up_in])
            gaps = np.maximum(gaps, 0.0)
            down[self.up_in] += 0.45 * m.lip_press * gaps
            down[self.low_in] -= 0.55 * m.lip_press * gaps
            down[self.up_out] += 0.25 * m.lip_press * self.thick_up
            down[self.low_out] -= 0.25 * m.lip_press * self.thick_low
        disp = np.outer(across, ex) + np.outer(down, ey)
        if m.head_pitch or m.head_yaw or m.head_roll:
            disp += self._head(disp, m)
        return disp

    def _add_expression(self, expression: np.ndarray, across: np.ndarray, down: np.ndarray,
                        jaw_at_rest: bool) -> None:
        """Add the retargeted ``expression`` (468, 2) to ``across`` / ``down`` (V,) pixels along ex / ey
        in place: on the face landmarks, and with the falloff ``RING_FOLLOW`` on the rings outside.

        The expression's limits apply on top of what ``down`` already opens (jaw_open)."""
        base = self.metrics.rest_gaps + (down[self.all_low_in] - down[self.all_up_in])
        offsets = retarget_expression(expression, self.metrics, base)
        if jaw_at_rest:
            offsets = without_opening(offsets, self.metrics)
        along_x, along_y = offsets @ self.ex, offsets @ self.ey
        across[:NUM_FACE_POINTS] += along_x
        down[:NUM_FACE_POINTS] += along_y
        across[self.ring_dst] += self.ring_follow * along_x[self.ring_src]
        down[self.ring_dst] += self.ring_follow * along_y[self.ring_src]

    def _head(self, disp: np.ndarray, m: FaceMotion) -> np.ndarray:
        """Displacement added by rotating the (already deformed) face about the neck pivot."""
        rel = self._points_from_pivot.copy()
        rel[:, :2] += disp
        cp, sp = math.cos(m.head_pitch), math.sin(m.head_pitch)
        cy, sy = math.cos(m.head_yaw), math.sin(m.head_yaw)
        cr, sr = math.cos(m.head_roll), math.sin(m.head_roll)
        # pitch about the x axis (+ nods down), yaw about the y axis (+ turns to the viewer's right),
        # roll in the image plane (+ clockwise); image axes: x right, y down, z away from the camera.
        pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        turn = (roll @ yaw @ pitch - np.eye(3)).T[:, :2]  # rel @ turn: rotated - rel, in x and y
        moved = rel @ turn
        moved += np.array([m.head_yaw, m.head_pitch]) * self.sway
        moved *= self._head_column
        return moved


def _edge_inverses(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse rest edge matrices (T, 2, 2) and a mask of (near) degenerate triangles."""
    tri = vertices[triangles]
    edges = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], axis=2)
    det = edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]
    degenerate = np.abs(det) < 1.0  # under ~1 square pixel: strips of closed lips and lids
    safe = np.where(degenerate, 1.0, det)
    inverse = np.stack([np.stack([edges[:, 1, 1], -edges[:, 0, 1]], axis=1),
                        np.stack([-edges[:, 1, 0], edges[:, 0, 0]], axis=1)], axis=1) / safe[:, None, None]
    return inverse, degenerate


@lru_cache(maxsize=4)
def _pixel_grid(size: int) -> np.ndarray:
    """Read-only float32 (size, size, 2) x, y pixel coordinates, shared by all renderers."""
    xs = np.arange(size, dtype=np.float32)
    grid = np.stack(np.meshgrid(xs, xs), axis=2)
    grid.flags.writeable = False
    return grid


_RELATIVE_MAP: int | None = getattr(cv2, "WARP_RELATIVE_MAP", None)
"""OpenCV >= 4.10: ``remap`` adds each output pixel's own position to the map."""


def _warp(image_rgba: np.ndarray, offsets: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``image_rgba`` (H, W, 4) uint8 sampled bilinearly (edges replicated) at pixel + ``offsets`` for the
    box of ``offsets.shape[:2]`` pixels at ``origin`` (x0, y0): uint8 (h, w, 4). ``offsets``: float32
    (h, w, 2) x, y pixels, overwritten.

    Four channels and one two-channel map: OpenCV's float-map bilinear remap is vectorised for them
    (at 512², about half the time of RGB with separate x and y maps, same pixels); a box at the image's
    origin is warped with the offsets as they are (``WARP_RELATIVE_MAP``), others with absolute positions.
    """
    x0, y0 = origin
    if x0 == 0 and y0 == 0 and _RELATIVE_MAP is not None:
        return cv2.remap(image_rgba, offsets, None, cv2.INTER_LINEAR | _RELATIVE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    h, w = offsets.shape[:2]
    positions = np.add(offsets, _pixel_grid(max(image_rgba.shape[:2]))[y0:y0 + h, x0:x0 + w], out=offsets)
    return cv2.remap(image_rgba, positions, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _padded(values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A new C-contiguous (rows, cols, ...) copy of ``values[:rows, :cols]``, its last row and column
    repeated where ``values`` is smaller (``np.pad`` mode "edge", without its overhead)."""
    h, w = min(values.shape[0], rows), min(values.shape[1], cols)
    out = np.empty((rows, cols, *values.shape[2:]), dtype=values.dtype)
    out[:h, :w] = values[:h, :w]
    out[h:, :w] = out[h - 1:h, :w]
    out[:, w:] = out[:, w - 1:w]
    return out


def _sorted_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


@dataclasses.dataclass(frozen=True)
class _JawAtRest:
    """The mesh with the jaw at rest, to invert over the mouth box: its fine ``grid``, the ``rest`` and
    ``deformed`` corners (k, 3, 2) of the triangles to rasterise there, the inner-lip ``polygon``."""

    grid: WarpGrid
    rest: np.ndarray
    deformed: np.ndarray
    polygon: np.ndarray


def _write_patch(offsets: np.ndarray, origin: tuple[int, int], grid: WarpGrid, box: tuple[int, int, int, int],
                 exact: NodeValues) -> None:
    """Overwrite backward ``offsets`` (h, w, 2) of the pixels at ``origin`` inside ``box`` (x0, y0, x1, y1)
    with the fine ``grid`` holding ``exact`` offsets at the nodes its triangles cover and, at the
    others, the coarse solution it had (so nodes outside the rasterised face triangles keep it)."""
    ox, oy = origin
    x0, y0, x1, y1 = box
    region = offsets[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    step = grid.step
    fine = _padded(region[step // 2::step, step // 2::step], *grid.shape)
    exact.write(fine)
    if step > 1:
        fine = cv2.resize(fine, grid.pixel_shape[::-1], interpolation=cv2.INTER_LINEAR)
    region[:] = fine[:y1 - y0, :x1 - x0]


class PortraitRenderer:
    """Renders a rigged portrait for any FaceMotion. Not thread-safe; use one per session."""

    def __init__(self, rig: PortraitRig) -> None:
        if rig.mesh is None or rig.sampler is None:
            raise ValueError("PortraitRig has no mesh; build it with prepare_portrait")
        self.rig = rig
        self.model = MotionModel(rig)
        self.mouth = MouthPainter(rig.image, rig.landmarks, rig.face_height)
        size = rig.size
        self._rest = rig.mesh.vertices.astype(np.float64)
        self._triangles = rig.mesh.triangles
        self._inner = np.arange(len(self._triangles)) < rig.mesh.inner_triangles
        inverse, self._degenerate = _edge_inverses(self._rest, self._triangles)
        # elements 00, 01, 10, 11 of the inverse rest edge matrices, each (T,)
        self._rest_edges_inv = tuple(np.ascontiguousarray(inverse[:, i, j]) for i, j in np.ndindex(2, 2))
        self._rest_corners = self._rest[self._triangles]
        lm = rig.landmarks
        eye_gap = (np.linalg.norm(lm[159] - lm[145]) + np.linalg.norm(lm[386] - lm[374])) / 2
        eye_step = 2 if eye_gap >= 14 else 1  # lids and lips must stay sharp when small
        mouth_step = 2 if np.linalg.norm(lm[308] - lm[78]) >= 64 else 1
        self._eye_gap = float(eye_gap)
        self._fine_steps = (mouth_step, eye_step, eye_step)
        lips = [*LIPS_OUTER_UPPER, *LIPS_OUTER_LOWER, *LIPS_INNER_UPPER, *LIPS_INNER_LOWER]
        self._fine_parts = [np.array(lips)] + [np.array(up + low) for up, low in zip(EYE_UPPER, EYE_LOWER,
                                                                                     strict=True)]
        self._fine_margin = [max(3.0, 0.04 * rig.face_height)] + [max(3.0, 0.025 * rig.face_height)] * 2
        self._image_rgba = cv2.cvtColor(rig.image, cv2.COLOR_RGB2RGBA)
        self._breath = self._breath_weights(rig)
        self._breath_px = BREATH_PX_AT_512 * size / 512
        self.stage_ms: dict[str, float] = {}
        self.clock: Callable[[], float] = time.perf_counter

    @staticmethod
    def _breath_weights(rig: PortraitRig) -> np.ndarray:
        """Coarse-grid weights (rows, cols) of the breathing lift: chest and shoulders below the chin."""
        grid = rig.sampler.grid
        node = grid.node_xy().reshape(*grid.shape, 2)
        chin = rig.landmarks[CHIN]
        height = rig.face_height
        below = _smoothstep(chin[1] + 0.15 * height, chin[1] + 0.9 * height, node[:, :, 1])
        across = 1.0 - _smoothstep(1.2 * height, 2.2 * height, np.abs(node[:, :, 0] - chin[0]))
        return (below * across).astype(np.float32)

    def render(self, motion: FaceMotion, source: np.ndarray | None = None, paint_mouth: bool = True
               ) -> np.ndarray:
        """The portrait animated by ``motion``: uint8 RGB (size, size, 3). Inputs are clamped.

        ``source``: warp this image (same size and geometry as the rig's portrait, e.g. the portrait with
        a generated mouth pasted in) instead of the rig's; ``paint_mouth=False`` leaves the mouth interior
        to that source (the EMO engine's demo composite).

        Per-stage times of the last call are left in ``stage_ms`` (milliseconds of ``self.clock``:
        wall time by default; benchmarks may set ``time.thread_time`` to ignore CPU contention).
        """
        clock = Stopwatch(self.clock)
        m = clamp_motion(motion)
        disp = self.model.displacements(m)
        sampler = self.rig.sampler
        field = sampler.forward_field(disp)
        if abs(m.breath) > 1e-3:
            field[:, :, 1] -= self._breath * (m.breath * self._breath_px)
        moving = (np.abs(field[:, :, 0]) + np.abs(field[:, :, 1])) > 0.01
        clock.lap("motion")
        image = self.rig.image if source is None else source
        if not moving.any():
            self.stage_ms = clock.totals()
            return image.copy()
        size, step = self.rig.size, sampler.grid.step
        rows, cols = np.flatnonzero(moving.any(axis=1)), np.flatnonzero(moving.any(axis=0))
        r0, c0 = max(int(rows[0]) - 1, 0), max(int(cols[0]) - 1, 0)
        r1, c1 = int(rows[-1]) + 2, int(cols[-1]) + 2
        coarse = sampler.invert(field, slice(r0, r1), slice(c0, c1), iterations=4)
        moved = self._rest + disp
        corners = np.take(moved, self._triangles, axis=0)
        vertex_moving = (np.abs(disp[:, 0]) > 0.01) | (np.abs(disp[:, 1]) > 0.01)
        candidates = self._touching(vertex_moving) & self._inner
        region = WarpGrid((c0 * step, r0 * step), step, coarse.shape[:2])
        x0, y0 = region.origin
        x1, y1 = min(x0 + region.pixel_shape[1], size), min(y0 + region.pixel_shape[0], size)
        steep = np.flatnonzero(self._steep_triangles(corners) & candidates)
        clock.lap("coarse grid")
        # Every exact inversion in one vectorised pass: the coarse grid's steep triangles, a fine grid
        # around the mouth and each moving eye (always, not only while it blinks or talks, so that
        # starting to blink or talk does not switch grids with a visible pop), and the mouth box
        # with the jaw at rest (an open portrait mouth's own interior).
        bounds = corner_bounds(corners)
        patches = self._fine_patches(vertex_moving, moved, (x0, y0, x1, y1))
        grids = [region, *(grid for grid, _ in patches)]
        which = [steep, *(np.flatnonzero(candidates & grid.overlaps(*bounds)) for grid in grids[1:])]
        rest = [self._rest_corners[w] for w in which]
        deformed = [corners[w] for w in which]
        upper, lower = moved[list(LIPS_INNER_UPPER)], moved[list(LIPS_INNER_LOWER)]
        box = self.mouth.box(upper, lower, (size, size)) if paint_mouth else None
        jaw_at_rest = None
        if box is not None and self.mouth.rest_open:
            jaw_at_rest = self._jaw_at_rest(m, box)
            grids.append(jaw_at_rest.grid)
            rest.append(jaw_at_rest.rest)
            deformed.append(jaw_at_rest.deformed)
        exact = exact_offsets_at(grids, rest, deformed)
        exact[0].write(coarse)
        clock.lap("exact grids")
        offsets = cv2.resize(coarse, region.pixel_shape[::-1], interpolation=cv2.INTER_LINEAR)
        offsets = offsets[:y1 - y0, :x1 - x0]
        clock.lap("upsample")
        for (grid, patch_box), values in zip(patches, exact[1:], strict=False):
            _write_patch(offsets, (x0, y0), grid, patch_box, values)
        clock.lap("fine grids")
        image_rgba = self._image_rgba if source is None else cv2.cvtColor(source, cv2.COLOR_RGB2RGBA)
        warped = _warp(image_rgba, offsets, (x0, y0))
        if (x0, y0, x1, y1) == (0, 0, size, size):
            frame = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
        else:
            frame = image.copy()
            cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB, dst=frame[y0:y1, x0:x1])
        clock.lap("remap")
        if m.blink > 0.5:
            for lid in EYE_UPPER:
                self._seal_lid(frame, moved[list(lid)], _smoothstep(0.5, 1.0, m.blink))
        if box is not None:
            rest_layer = None if jaw_at_rest is None else self._rest_layer(jaw_at_rest, exact[-1], box)
            self.mouth.paint(frame, upper, lower, box, rest_layer)
        clock.lap("mouth")
        self.stage_ms = clock.totals()
        return frame

    def _touching(self, vertex_mask: np.ndarray) -> np.ndarray:
        """Triangles (T,) with at least one corner in ``vertex_mask`` (V,) bool."""
        corner = np.take(vertex_mask, self._triangles)
        return corner[:, 0] | corner[:, 1] | corner[:, 2]

    def _fine_patches(self, vertex_moving: np.ndarray, moved: np.ndarray, region: tuple[int, int, int, int]
                      ) -> list[tuple[WarpGrid, tuple[int, int, int, int]]]:
        """The fine grids (nodes every 1 or 2 px) over the mouth and each eye whose landmarks move, each
        with its pixel box (x0, y0, x1, y1): the landmarks at rest and ``moved`` plus a margin, inside
        ``region``; boxes under 2 px are left out."""
        patches = []
        for part, margin, step in zip(self._fine_parts, self._fine_margin, self._fine_steps, strict=True):
            if not vertex_moving[part].any():
                continue
            pts = np.vstack([self._rest[part], moved[part]])
            x0, y0 = np.maximum(np.floor(pts.min(axis=0) - margin).astype(int), region[:2])
            x1, y1 = np.minimum(np.ceil(pts.max(axis=0) + margin).astype(int), region[2:])
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                box = (int(x0), int(y0), int(x1), int(y1))
                patches.append((WarpGrid.covering(*box, step), box))
        return patches

    def _jaw_at_rest(self, m: FaceMotion, box: tuple[int, int, int, int]) -> _JawAtRest:
        """The mesh warped by ``m`` without jaw and lip press (and with the expression's inner-lip gaps
        kept at rest), to be inverted on a fine grid over ``box`` (x0, y0, x1, y1)."""
        disp = self.model.displacements(dataclasses.replace(m, jaw_open=0.0, lip_press=0.0, close_rest=0.0),
                                          jaw_at_rest=True)
        moved = self._rest + disp
        polygon = np.concatenate([moved[list(LIPS_INNER_UPPER)], moved[list(LIPS_INNER_LOWER)][-2:0:-1]])
        grid = WarpGrid.covering(*box, self._fine_steps[0])
        corners = np.take(moved, self._triangles, axis=0)
        vertex_moving = (np.abs(disp[:, 0]) > 0.01) | (np.abs(disp[:, 1]) > 0.01)
        moving = self._touching(vertex_moving) & self._inner
        moving &= grid.overlaps(*corner_bounds(corners))
        which = np.flatnonzero(moving)
        return _JawAtRest(grid, self._rest_corners[which], corners[which], polygon)

    def _rest_layer(self, jaw: _JawAtRest, exact: NodeValues, box: tuple[int, int, int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The portrait warped with the jaw at rest over ``box`` (x0, y0, x1, y1), from the exact
        offsets on ``jaw.grid``: float32 (h, w, 3) pixels and the inner-lip polygon (k, 2) of that warp,
        in image pixels."""
        x0, y0, x1, y1 = box
        offsets = np.zeros((*jaw.grid.shape, 2), dtype=np.float32)
        exact.write(offsets)
        if jaw.grid.step > 1:
            offsets = cv2.resize(offsets, jaw.grid.pixel_shape[::-1], interpolation=cv2.INTER_LINEAR)
        layer = _warp(self._image_rgba, offsets[:y1 - y0, :x1 - x0], (x0, y0))
        return layer[:, :, :3].astype(np.float32), jaw.polygon

    def _seal_lid(self, frame: np.ndarray, margin: np.ndarray, strength: float) -> None:
        """Cover the sliver under a closing upper lid with the lower-lid skin just below it (in place).

        The lower-lid landmarks sit on the inner edge of the lid, so a warp that only brings the
        lids together leaves a thin line of eye white under the lashes; lid skin drawn over it (a
        band tapering to the eye corners, feathered) leaves one thin lash line, a closed eye.
        """
        ey = self.model.ey
        reach = max(1.5, 0.2 * self._eye_gap) * strength
        profile = np.sin(np.linspace(0.0, np.pi, len(margin)))[:, None]
        lower = margin + reach * profile * ey
        polygon = np.concatenate([margin, lower[::-1]])
        h, w = frame.shape[:2]
        x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 3, 0)
        x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 4, [w, h])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((polygon - [x0, y0]) * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.7)[:, :, None] * strength
        shift = np.array([[1.0, 0.0, -reach * ey[0] - x0], [0.0, 1.0, -reach * ey[1] - y0]])  # from below
        lid = cv2.warpAffine(frame, shift, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(roi + (lid - roi) * alpha + 0.5, 0, 255).astype(np.uint8)

    def _steep_triangles(self, tri: np.ndarray) -> np.ndarray:
        """Triangles (corners (T, 3, 2)) whose warp departs from a translation by more than the
        fixed-point inversion handles."""
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]  # edge columns of (T, 2, 2) matrices
        r00, r01, r10, r11 = self._rest_edges_inv
        worst = np.abs(e1[:, 0] * r00 + e2[:, 0] * r10 - 1.0)  # |Jacobian - identity|, element-wise
        for part in (e1[:, 0] * r01 + e2[:, 0] * r11, e1[:, 1] * r00 + e2[:, 1] * r10,
                     e1[:, 1] * r01 + e2[:, 1] * r11 - 1.0):
            np.maximum(worst, np.abs(part), out=worst)
        return self._degenerate | (worst > STEEP_WARP)
