"""How a portrait is framed into the square output: ``full`` (the whole picture, as before) or
``head_and_shoulders`` (a crop around the face for video calls).

The crop is computed once per portrait from the face-mesh landmarks found during preparation
(``avatar.face.portrait.prepare_portrait``), never per frame.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from avatar.errors import ConfigError
from avatar.face.mesh import CHIN, FOREHEAD_TOP

FACE_SHARE = 0.45
"""Head-and-shoulders: forehead-top-to-chin height as a share of the output height."""
EYES_FROM_TOP = 0.40
"""Head-and-shoulders: eye line as a share of the output height from the top."""
EYE_CORNERS = (33, 133, 263, 362)
"""Outer and inner eye corners of both eyes (MediaPipe indices); their mean is the eye line."""


class Framing(StrEnum):
    FULL = "full"
    """The whole picture (its largest square around the face; tiny faces get a closer crop)."""
    HEAD_AND_SHOULDERS = "head_and_shoulders"
    """Square crop around the face: face about 45 % of the height, eyes 40 % from the top."""


def parse_framing(value: object, what: str = "framing") -> Framing:
    """``value`` as a ``Framing``; anything else raises ``ConfigError`` with a one-line message."""
    try:
        return Framing(value)
    except ValueError:
        choices = ", ".join(f.value for f in Framing)
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."  # offers come from clients: keep it short
        raise ConfigError(f"{what} must be one of: {choices}; got {shown}") from None


def head_and_shoulders_crop(width: int, height: int, face: np.ndarray) -> tuple[float, float, float]:
    """Square crop (x0, y0, side) in source pixels around a face (landmarks (478, 2+) in pixels).

    The side is the face height / ``FACE_SHARE``, centred on the face horizontally, eyes at
    ``EYES_FROM_TOP``. The crop never leaves the image: a side larger than the image's short side is
    cut to it (so a face that already fills the picture is not zoomed in further), and a face near an
    edge shifts the crop inward rather than padding (the face is then off-centre, never cut off).
    """
    pts = np.asarray(face, dtype=np.float64)[:, :2]
    face_h = float(np.linalg.norm(pts[FOREHEAD_TOP] - pts[CHIN]))
    side = min(max(face_h / FACE_SHARE, 1.0), float(width), float(height))
    cx = (pts[:, 0].min() + pts[:, 0].max()) / 2.0
    eyes_y = float(pts[list(EYE_CORNERS), 1].mean())
    left = float(np.clip(cx - side / 2.0, 0.0, width - side))
    top = float(np.clip(eyes_y - EYES_FROM_TOP * side, 0.0, height - side))
    return left, top, side


__all__ = ["Framing", "parse_framing", "head_and_shoulders_crop", "FACE_SHARE", "EYES_FROM_TOP"]
