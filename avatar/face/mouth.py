"""Mouth interior painted inside the parted lips: dark cavity, upper teeth, tongue, lower-teeth hint.

Colours come from the portrait itself (its lips and skin), so the interior suits photographs,
paintings, 3D renders and grayscale sketches alike. When the portrait already shows its teeth, the
real interior (warped with the jaw at rest) is kept on top and only the newly opened part is painted.
Compositing uses feathered polygon masks.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER, LIPS_OUTER_LOWER, LIPS_OUTER_UPPER

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_INCISOR_EDGES = np.array([0.0, -0.2, 0.2, -0.38, 0.38, -0.54, 0.54, -0.68, 0.68], dtype=np.float32)
"""Gaps between upper teeth across the mouth, in half-widths of the inner lip line."""
_TABLE_U = np.linspace(-1.0, 1.0, 401, dtype=np.float32)
"""Where the teeth gaps' profile is tabulated across the mouth (half-widths)."""


def _widest_gap(upper: np.ndarray, lower: np.ndarray) -> float:
    """The largest distance (pixels) between matching points of two contours (k, 2)."""
    d = upper - lower
    return math.sqrt(float(np.max(d[:, 0] ** 2 + d[:, 1] ** 2)))


def _polygon_mask(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(p * 4).astype(np.int32) for p in polygons], 255, cv2.LINE_8, shift=2)
    return mask


def _median_color(image: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    pixels = image[mask > 0]
    return np.median(pixels, axis=0).astype(np.float32) if len(pixels) >= 8 else fallback


class MouthPalette:
    """Interior colours (float32 RGB 0..255) derived from a portrait's lips and skin."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, face_height: float) -> None:
        h, w = image.shape[:2]
        outer = np.concatenate([landmarks[list(LIPS_OUTER_UPPER)], landmarks[list(LIPS_OUTER_LOWER)][::-1]])
        inner = np.concatenate([landmarks[list(LIPS_INNER_UPPER)], landmarks[list(LIPS_INNER_LOWER)][::-1]])
        lips = _polygon_mask((h, w), [outer]) & ~_polygon_mask((h, w), [inner])
        cheeks = np.zeros((h, w), dtype=np.uint8)
        radius = max(2, int(0.05 * face_height))
        for idx in (50, 280, 101, 330):
            cv2.circle(cheeks, tuple(int(v) for v in landmarks[idx]), radius, 255, -1)
        skin = _median_color(image, cheeks, np.full(3, 180.0, np.float32))
        lip = _median_color(image, lips, skin * np.array([0.9, 0.7, 0.7], np.float32))
        x0, y0 = np.maximum(landmarks.min(axis=0).astype(int), 0)
        x1, y1 = landmarks.max(axis=0).astype(int) + 1
        face_luma = image[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32) @ _LUMA
        bright = float(np.percentile(face_luma, 99)) if face_luma.size else 230.0

        skin_luma = max(float(skin @ _LUMA), 1.0)
        tint = skin / skin_luma  # the portrait's hue at unit luminance (all ones when grayscale)
        teeth_luma = min(max(skin_luma * 1.1, 0.85 * bright), bright, 240.0)
        self.teeth = teeth_luma * (0.9 + 0.1 * tint)
        lip_luma = max(float(lip @ _LUMA), 1.0)
        self.cavity = _with_luma(lip, 0.16 * lip_luma, saturation=1.6)
        self.tongue = _with_luma(lip, 0.36 * lip_luma, saturation=1.4)
        self.lip = lip
        self.skin = skin


def _with_luma(color: np.ndarray, luma: float, saturation: float = 1.0) -> np.ndarray:
    """``color`` rescaled to luminance ``luma`` with its chroma multiplied by ``saturation``."""
    own = max(float(color @ _LUMA), 1.0)
    gray = np.full(3, own, dtype=np.float32)
    scaled = (gray + (color - gray) * saturation) * (luma / own)
    return np.clip(scaled, 0.0, 255.0).astype(np.float32)


class MouthPainter:
    """Composites the mouth interior inside the inner-lip contour of a deformed face.

    When the portrait's mouth is already open (teeth or a dark gap visible, ``rest_open``), the
    caller passes that rest interior as it looks with the jaw at rest (upper teeth belong to the
    skull, not the jaw); the synthetic interior then only fills what opens below it.
    """

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, face_height: float) -> None:
        self.palette = MouthPalette(image, landmarks, face_height)
        self.face_height = face_height
        upper, lower = landmarks[list(LIPS_INNER_UPPER)], landmarks[list(LIPS_INNER_LOWER)]
        self.rest_gap = float(np.max(np.linalg.norm(upper - lower, axis=1)))
        self.feather = max(0.5, 0.006 * face_height)
        self.rest_open = self.rest_gap >= max(2.0, 0.015 * face_height)

    def opacity(self, upper: np.ndarray, lower: np.ndarray) -> float:
        """How much of the synthetic interior to show (0..1) given the current contours (11, 2)."""
        return self._opacity(_widest_gap(upper, lower))

    def _opacity(self, gap: float) -> float:
        """``opacity`` for the widest gap between the contours (pixels)."""
        extra = gap - self.rest_gap
        ramp = 0.5 * self.rest_gap + 0.015 * self.face_height
        return float(np.clip(extra / max(ramp, 1e-3), 0.0, 1.0))

    def box(self, upper: np.ndarray, lower: np.ndarray, shape: tuple[int, ...]
            ) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1) that ``paint`` touches for these contours, None if empty."""
        polygon = np.concatenate([upper, lower])
        pad = int(np.ceil(3 * self.feather)) + 1
        x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - pad, 0)
        x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + pad + 1, [shape[1], shape[0]])
        return (int(x0), int(y0), int(x1), int(y1)) if x1 - x0 >= 2 and y1 - y0 >= 2 else None

    def paint(self, frame: np.ndarray, upper: np.ndarray, lower: np.ndarray,
              box: tuple[int, int, int, int], rest_layer: tuple[np.ndarray, np.ndarray] | None = None
              ) -> None:
        """Paint the interior in place into ``frame`` (uint8 RGB) between the inner contours.

        ``upper``/``lower``: current inner-lip contours, float (11, 2) pixels, corner to corner;
        ``box``: from ``box()``; ``rest_layer``: for ``rest_open`` mouths, the portrait warped with
        the jaw at rest over ``box`` (float32 (h, w, 3)) and its inner-lip polygon (k, 2) in pixels.
        """
        gap = _widest_gap(upper, lower)
        alpha = self._opacity(gap)
        if alpha <= 0.0 and rest_layer is None:
            return
        x0, y0, x1, y1 = box
        origin = np.array([x0, y0], dtype=np.float32)
        shape = (y1 - y0, x1 - x0)
        polygon = np.concatenate([upper, lower[-2:0:-1]])
        mask = cv2.GaussianBlur(_polygon_mask(shape, [polygon - origin]).astype(np.float32) / 255.0,
                                (0, 0), self.feather)
        # a polygon fill always draws its outline: fade out as the lips meet (gap under 2 px)
        mask *= min(max(gap / 2.0, 0.0), 1.0)
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        inside = roi
        if alpha > 0.0:
            synthetic = self._interior(upper - origin, lower - origin, shape, rest_layer is None)
            inside = roi + (synthetic - roi) * alpha
        if rest_layer is not None:
            layer, layer_polygon = rest_layer
            cover = _polygon_mask(shape, [layer_polygon - origin]).astype(np.float32) / 255.0
            cover = cv2.GaussianBlur(cover, (0, 0), self.feather)[:, :, None]
            inside = inside + (layer - inside) * cover
        roi += (inside - roi) * mask[:, :, None]
        frame[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)

    def _interior(self, upper: np.ndarray, lower: np.ndarray, shape: tuple[int, int],
                  upper_teeth: bool = True) -> np.ndarray:
        """Interior colours (rows, cols, 3) float32 for a ROI with the contours in ROI pixels."""
        pal = self.palette
        left, right = (upper[0] + lower[0]) / 2, (upper[-1] + lower[-1]) / 2
        axis = right - left
        half = max(float(np.linalg.norm(axis)) / 2, 1.0)
        ex = axis / (2 * half)
        ey = np.array([-ex[1], ex[0]], dtype=np.float32)
        center = (left + right) / 2
        xs = np.arange(shape[1], dtype=np.float32)[None, :] - center[0]
        ys = np.arange(shape[0], dtype=np.float32)[:, None] - center[1]
        u = (xs * ex[0] + ys * ex[1]) / half  # -1 .. 1 corner to corner
        v = xs * ey[0] + ys * ey[1]  # pixels below the corner line
        cu, cl = (upper - center) @ np.stack([ex, ey], 1), (lower - center) @ np.stack([ex, ey], 1)
        v_up = np.interp(u, *_increasing(cu[:, 0] / half, cu[:, 1]))
        v_low = np.interp(u, *_increasing(cl[:, 0] / half, cl[:, 1]))
        gap = np.maximum(v_low - v_up, 1e-3)
        t = np.clip((v - v_up) / gap, 0.0, 1.0)  # 0 under the upper lip .. 1 on the lower lip
        au = np.abs(u)
        depth = v - v_up  # pixels below the upper lip
        width = 2 * half

        # The interior is the cavity colour blended towards the tongue, the lower teeth and the upper
        # teeth in turn (each ``color += (target - color) * weight``), times the corners' occlusion;
        # carried as one weight per palette colour (scalars per pixel, one (h, w, 3) product at the end).
        # Cavity: darkest at the back under the teeth, a little lighter towards the tongue.
        cavity = 0.7 + 0.6 * t
        # Tongue: a low dome across the middle, lit on top, when the mouth is open enough.
        span = np.clip(1.0 - (u / 0.7) ** 2, 0.0, 1.0)
        dome = 1.0 - 0.35 * np.sqrt(span)
        tongue = np.clip((t - dome) / 0.15, 0.0, 1.0) * np.clip(gap / (0.06 * self.face_height) - 0.3, 0, 1)
        tongue_shade = (0.7 + 0.3 * span) * (1.0 + 0.15 * np.clip(1.0 - (t - dome) / 0.2, 0, 1))
        cavity *= 1.0 - tongue
        tongue *= tongue_shade
        # Lower teeth: a faint band just above the lower lip in the middle of a wide-open mouth.
        low_reach = 0.035 * width * np.sqrt(np.clip(1.0 - (u / 0.5) ** 2, 0, 1))
        low_teeth = np.clip((depth - (gap - low_reach)) / 0.8, 0, 1) * np.clip(gap / (0.1 * width) - 1, 0, 1)
        low_teeth *= 0.6
        keep = 1.0 - low_teeth
        cavity *= keep
        tongue *= keep
        teeth_weight = 0.7 * low_teeth
        # Upper teeth: a light band under the upper lip with a curved edge and faint gaps.
        arch = np.sqrt(np.clip(1.0 - (u / 0.82) ** 2, 0.0, 1.0))
        reach = np.minimum(0.11 * width * arch, 0.6 * gap)
        teeth = np.clip((reach - depth) / 0.8 + 0.5, 0.0, 1.0) * ((arch > 0) & upper_teeth)
        table = np.exp(-(((_TABLE_U[:, None] - _INCISOR_EDGES) * half / 0.6) ** 2)).sum(axis=1)
        gaps = np.interp(u, _TABLE_U, np.clip(table, 0, 1))
        tooth_shade = (1.0 - 0.4 * au**2) * (1.0 - 0.1 * gaps)
        tooth_shade *= 0.82 + 0.18 * np.clip(depth / np.maximum(0.35 * reach, 1e-3), 0, 1)
        keep = 1.0 - teeth
        # Ambient occlusion: darker towards the corners.
        occlusion = 1.0 - 0.6 * au**4
        weights = np.stack([cavity * keep, tongue * keep, teeth_weight * keep + tooth_shade * teeth], axis=2)
        weights *= occlusion[:, :, None]
        return weights @ np.stack([pal.cavity, pal.tongue, pal.teeth])


def _increasing(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]
