"""The generated face region: where it sits in the portrait, cropping it out, compositing it back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from avatar.errors import PortraitError

if TYPE_CHECKING:
    from avatar.face.portrait import PortraitRig


@dataclass(frozen=True)
class FaceRegion:
    """A square ``side``-pixel window at (x0, y0) in the portrait, generated at ``crop_size``².

    face_mask: float32 (crop_size, crop_size), 1 inside the face box (face-locator input).
    blend: float32 (side, side, 1), feathered weights for compositing (1 inside, 0 at the border).
    """

    x0: int
    y0: int
    side: int
    crop_size: int
    face_mask: np.ndarray
    blend: np.ndarray


def locate_face(portrait: str | Path | np.ndarray, size: int, framing: str = "full") -> PortraitRig:
    """The portrait rigged at output framing: ``image`` uint8 (size, size, 3), ``face_box`` (x0, y0, x1,
    y1) in it, ``warnings``, and the mesh the parametric renderer warps (``face.composite: parametric``).

    ``framing``: ``full`` or ``head_and_shoulders`` (``avatar.face.framing``), applied before the
    landmarks are found, so the face region and the rig both see the framed image. Uses
    ``avatar.face.portrait.prepare_portrait`` (MediaPipe face mesh). Raises ``PortraitError``.
    """
    try:
        from avatar.face.portrait import prepare_portrait
    except ImportError as exc:  # pragma: no cover - the parametric engine ships with the project
        raise PortraitError(f"portrait analysis is unavailable: {exc}") from None
    return prepare_portrait(portrait, size, framing)


def face_region(
    image_size: int,
    face_box: tuple[int, int, int, int],
    crop_size: int,
    scale: float,
    feather: float,
    shift: float = 0.0,
) -> FaceRegion:
    """Square window ``scale`` × the face box's longer side, centred ``shift`` × that side below the box
    centre (as ``avatar.training.data.process_frames`` cuts training crops), kept inside the image."""
    x0, y0, x1, y1 = face_box
    longer = max(x1 - x0, y1 - y0)
    side = int(round(min(image_size, longer * scale)))
    side = max(side, 16)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 + shift * longer
    left = int(round(np.clip(cx - side / 2.0, 0, image_size - side)))
    top = int(round(np.clip(cy - side / 2.0, 0, image_size - side)))
    k = crop_size / side
    mask = np.zeros((crop_size, crop_size), np.float32)
    fx0, fy0 = int((x0 - left) * k), int((y0 - top) * k)
    fx1, fy1 = int(np.ceil((x1 - left) * k)), int(np.ceil((y1 - top) * k))
    mask[max(fy0, 0) : max(fy1, 0), max(fx0, 0) : max(fx1, 0)] = 1.0
    ramp = max(1.0, feather * side)
    pos = np.arange(side, dtype=np.float32) + 0.5
    # crop edges that touch the image border need no feathering there
    lo_x, hi_x = left == 0, left + side == image_size
    lo_y, hi_y = top == 0, top + side == image_size
    ex = np.minimum(np.where(lo_x, np.inf, pos / ramp), np.where(hi_x, np.inf, (side - pos) / ramp))
    ey = np.minimum(np.where(lo_y, np.inf, pos / ramp), np.where(hi_y, np.inf, (side - pos) / ramp))
    w = np.clip(np.minimum(ey[:, None], ex[None, :]), 0.0, 1.0)
    blend = (w * w * (3 - 2 * w)).astype(np.float32)[..., None]  # smoothstep
    return FaceRegion(left, top, side, crop_size, mask, blend)


def crop_face(image: np.ndarray, region: FaceRegion) -> np.ndarray:
    """uint8 (crop_size, crop_size, 3) face crop of the framed portrait."""
    patch = image[region.y0 : region.y0 + region.side, region.x0 : region.x0 + region.side]
    return cv2.resize(patch, (region.crop_size, region.crop_size), interpolation=cv2.INTER_AREA)


def composite(image: np.ndarray, face: np.ndarray, region: FaceRegion) -> np.ndarray:
    """Portrait copy with the generated ``face`` (uint8 (crop_size, crop_size, 3)) feathered in."""
    patch = cv2.resize(face, (region.side, region.side), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    out = image.copy()
    ys, xs = slice(region.y0, region.y0 + region.side), slice(region.x0, region.x0 + region.side)
    base = out[ys, xs].astype(np.float32)
    out[ys, xs] = (base + (patch - base) * region.blend).round().clip(0, 255).astype(np.uint8)
    return out
