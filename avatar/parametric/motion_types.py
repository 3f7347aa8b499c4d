"""Per-frame animation parameters passed from the audio-to-motion stage to the renderer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FaceMotion:
    """Animation state of one video frame. All values are relative to the portrait at rest.

    Mouth
      jaw_open    0 (rest) .. 1 (wide open: inner-lip gap about 0.18 of face height)
      lip_width  -1 (rounded / pursed, "oo") .. 0 (rest) .. 1 (spread, "ee")
      lip_press   0 .. 1 lips pressed together (bilabials m/b/p); the renderer closes the lips by it
    Eyes and brows
      blink       0 (open) .. 1 (closed), both eyes
      brow_raise  0 .. 1 (about 0.04 of face height at 1)
    Head, radians, applied as a rotation of the face about the neck (small angles, |a| <= 0.25)
      head_pitch  + nods down
      head_yaw    + turns to the portrait's left (viewer's right)
      head_roll   + tilts clockwise in the image
    Body
      breath      -1 .. 1 phase of a slow breathing cycle (shoulders/chest rise by a few pixels)
    """

    jaw_open: float = 0.0
    lip_width: float = 0.0
    lip_press: float = 0.0
    blink: float = 0.0
    brow_raise: float = 0.0
    head_pitch: float = 0.0
    head_yaw: float = 0.0
    head_roll: float = 0.0
    breath: float = 0.0
