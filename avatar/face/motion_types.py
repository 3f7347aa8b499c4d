"""Per-frame animation parameters passed from the audio-to-motion stage to the renderer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANONICAL_MOUTH_WIDTH = 0.284
"""Mouth width (corner 61 to corner 291) of the average face that ``FaceMotion.expression`` offsets
are expressed for, in face heights: the canonical face the motion model learned on
(``avatar/motion/canonical_face.npy``, the mean of the training speakers)."""


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
    Rest
      close_rest  0 .. 1 how much of the portrait's own resting mouth opening (a portrait photographed
                  mid-word or smiling with its teeth showing) the jaw closes before the rest applies:
                  learned motion sets 1, since its offsets are measured from a closed mouth; the rules
                  leave 0 (their jaw opens from the portrait as it is)
    Full face shape (learned motion models)
      expression  None, or float32 (468, 2): offsets of the 468 face-mesh landmarks from the portrait's
                  rest shape, in face heights (forehead-top landmark 10 to chin 152), in the face's own
                  frame: x along the eye line, pointing from the portrait's right eye (landmark 33
                  side, image left) to its left eye (263 side, image right); y perpendicular to it,
                  pointing down toward the chin. The offsets are those of an average face whose mouth
                  width (61 to 291) is ``CANONICAL_MOUTH_WIDTH`` face heights; the renderer retargets
                  them to the portrait (``avatar.face.retarget``). Eyelid landmarks carry zero (blinks
                  stay the ``blink`` scalar). When set, jaw_open / lip_width / lip_press / brow_raise
                  are normally 0; non-zero values add to it.
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
    close_rest: float = 0.0
    expression: np.ndarray | None = None


SCALAR_FIELDS = ("jaw_open", "lip_width", "lip_press", "blink", "brow_raise", "head_pitch", "head_yaw",
                 "head_roll", "breath", "close_rest")
"""The float fields of ``FaceMotion`` (all but ``expression``), in declaration order."""
