"""The learned motion space: one vector per video frame, and its way back to a ``FaceMotion``.

Layout of a motion vector (``MOTION_DIM`` = 27 values, see ``MotionSlice``):

* ``mouth`` 16: coefficients of a PCA basis of the lower face's landmark offsets (lips, jaw, cheeks)
  from the speaker's closed-mouth rest, in face heights, in the canonical (frontal) frame;
* ``brows`` 3: the same for the brows;
* ``blink`` 1: 0 open .. 1 closed (from the eye openness relative to the speaker's open eyes);
* ``gaze`` 2: iris offset from the eye centre, in eye widths, relative to the speaker's median;
* ``head`` 5: pitch, yaw, roll (radians) and x, y translation (face heights), relative to the speaker's
  median pose (a portrait's own pose is its rest).

``MotionBasis`` holds the PCA bases and the normalisation the sampler works in (each block scaled
as a whole, so minor PCA modes stay small), fitted on the training split and shipped with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from avatar.errors import ConfigError
from avatar.face.motion_types import FaceMotion
from avatar.motion.canonical import BROW_POINTS, EYE_POINTS, canonical_face

MOUTH_COMPONENTS = 16
BROW_COMPONENTS = 3
HEAD_LIMIT = 0.25
"""Radians: the renderer's hard limit on each head angle."""
TURN_GAIN = 1.9
"""The mesh-warp renderer shows about 0.53x of a commanded yaw or pitch (a 2D warp cannot turn the far
cheek out of sight; measured by re-fitting the face mesh of rendered turns, roll is 1.0x), so learned yaw
and pitch are scaled by 1 / 0.53 to look as large as the real speakers' turns."""


class MotionSlice:
    """Index ranges of the blocks of a motion vector."""

    mouth = slice(0, MOUTH_COMPONENTS)
    brows = slice(MOUTH_COMPONENTS, MOUTH_COMPONENTS + BROW_COMPONENTS)
    blink = MOUTH_COMPONENTS + BROW_COMPONENTS
    gaze = slice(MOUTH_COMPONENTS + BROW_COMPONENTS + 1, MOUTH_COMPONENTS + BROW_COMPONENTS + 3)
    head = slice(MOUTH_COMPONENTS + BROW_COMPONENTS + 3, MOUTH_COMPONENTS + BROW_COMPONENTS + 8)


SLICES = MotionSlice()
MOTION_DIM = MOUTH_COMPONENTS + BROW_COMPONENTS + 8


class MotionPart(StrEnum):
    """The two halves the sampler generates with separate denoisers: ``mouth`` (mouth and brows, from
    the audio alone) and ``head`` (blink, gaze and head, from the audio and the last motion frames)."""

    MOUTH = "mouth"
    HEAD = "head"


def part_dims(part: MotionPart | str) -> np.ndarray:
    """Indices of ``part``'s values in a motion vector."""
    if MotionPart(part) == MotionPart.MOUTH:
        return np.arange(0, SLICES.brows.stop)
    return np.arange(SLICES.blink, MOTION_DIM)


def mouth_points(template: np.ndarray | None = None) -> np.ndarray:
    """Lower-face landmarks (below the nose bridge, eyes excluded): the mouth block's points."""
    template = canonical_face() if template is None else template
    below = np.flatnonzero(template[:468, 1] > template[2, 1] - 0.02)
    return np.array([i for i in below if i not in set(EYE_POINTS)], dtype=np.int64)


def brow_points() -> np.ndarray:
    return np.array(BROW_POINTS, dtype=np.int64)


def eye_blink(openness: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Blink 0..1 per frame from eye openness relative to the clip's open eyes (80th percentile)."""
    open_level = float(np.quantile(openness[valid], 0.8)) if valid.any() else 0.3
    return np.clip((1.0 - openness / max(open_level, 1e-6)) / 0.8, 0.0, 1.0)


@dataclass
class MotionBasis:
    """PCA bases of the expression blocks and the normalisation of motion vectors.

    mouth_index (M,) / brow_index (B,): landmark indices of each block
    mouth_mean (2M,), mouth_basis (16, 2M): offsets (x0, y0, x1, y1, ...) = mean + coeffs @ basis
    brow_mean (2B,), brow_basis (3, 2B)
    center (27,), scale (27,): normalised = (vector - center) / scale
    """

    mouth_index: np.ndarray
    mouth_mean: np.ndarray
    mouth_basis: np.ndarray
    brow_index: np.ndarray
    brow_mean: np.ndarray
    brow_basis: np.ndarray
    center: np.ndarray
    scale: np.ndarray

    # --- fitting ------------------------------------------------------------------------------------
    @classmethod
    def fit_pca(cls, expressions: np.ndarray) -> MotionBasis:
        """Bases from expression offsets (n, 478, 3) in face heights (the normalisation is set later)."""
        mouth_index, brow_index = mouth_points(), brow_points()
        mouth_mean, mouth_basis = _pca(
            expressions[:, mouth_index, :2].reshape(len(expressions), -1), MOUTH_COMPONENTS
        )
        brow_mean, brow_basis = _pca(
            expressions[:, brow_index, :2].reshape(len(expressions), -1), BROW_COMPONENTS
        )
        return cls(
            mouth_index,
            mouth_mean,
            mouth_basis,
            brow_index,
            brow_mean,
            brow_basis,
            np.zeros(MOTION_DIM, np.float32),
            np.ones(MOTION_DIM, np.float32),
        )

    def fit_normalisation(self, vectors: np.ndarray) -> None:
        """Centre and scale from training vectors (n, 27): PCA blocks scaled by their first mode's spread
        (so minor modes stay small), the rest per value."""
        self.center = vectors.mean(axis=0).astype(np.float32)
        std = vectors.std(axis=0) + 1e-6
        scale = std.copy()
        scale[SLICES.mouth] = std[SLICES.mouth][0]
        scale[SLICES.brows] = std[SLICES.brows][0]
        self.scale = scale.astype(np.float32)

    # --- encoding -----------------------------------------------------------------------------------
    def encode(
        self, expression: np.ndarray, blink: np.ndarray, gaze: np.ndarray, head: np.ndarray
    ) -> np.ndarray:
        """Raw motion vectors (frames, 27) from expression offsets (frames, 478, 3), blink (frames,),
        relative gaze (frames, 2) and relative head pose (frames, 5)."""
        n = len(expression)
        mouth = (expression[:, self.mouth_index, :2].reshape(n, -1) - self.mouth_mean) @ self.mouth_basis.T
        brows = (expression[:, self.brow_index, :2].reshape(n, -1) - self.brow_mean) @ self.brow_basis.T
        return np.concatenate([mouth, brows, blink[:, None], gaze, head], axis=1).astype(np.float32)

    def normalise(self, vectors: np.ndarray) -> np.ndarray:
        return ((vectors - self.center) / self.scale).astype(np.float32)

    def denormalise(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors * self.scale + self.center).astype(np.float32)

    def rest_vector(self) -> np.ndarray:
        """Raw motion vector of the rest face (closed mouth, open eyes, median pose), (27,)."""
        zero = np.zeros((1, 478, 3), np.float32)
        return self.encode(zero, np.zeros(1), np.zeros((1, 2)), np.zeros((1, 5)))[0]

    # --- decoding -----------------------------------------------------------------------------------
    def expression(self, vector: np.ndarray) -> np.ndarray:
        """Landmark offsets (468, 2) float32 in face heights of one raw motion vector, measured from the
        rest vector's reconstruction, so the rest face is exactly zero (the portrait as it is)."""
        rest = self._rest_coefficients()
        out = np.zeros((468, 2), np.float32)
        out[self.mouth_index] = ((vector[SLICES.mouth] - rest[SLICES.mouth]) @ self.mouth_basis).reshape(
            -1, 2
        )
        out[self.brow_index] = ((vector[SLICES.brows] - rest[SLICES.brows]) @ self.brow_basis).reshape(-1, 2)
        return out

    def _rest_coefficients(self) -> np.ndarray:
        if getattr(self, "_rest", None) is None:  # the basis is read-only once fitted
            self._rest = self.rest_vector()
        return self._rest

    def face_motion(self, vector: np.ndarray, breath: float = 0.0) -> FaceMotion:
        """The ``FaceMotion`` the renderer draws for one raw motion vector (27,)."""
        pitch, yaw, roll, head_x, head_y = (float(v) for v in vector[SLICES.head])
        lim = HEAD_LIMIT
        return FaceMotion(
            blink=float(np.clip(vector[SLICES.blink], 0.0, 1.0)),
            head_pitch=float(np.clip(TURN_GAIN * pitch, -lim, lim)),
            head_yaw=float(np.clip(TURN_GAIN * yaw, -lim, lim)),
            head_roll=float(np.clip(roll, -lim, lim)),
            breath=breath,
            close_rest=1.0,
            expression=self.expression(vector),
        )

    def mouth_opening(self, vectors: np.ndarray) -> np.ndarray:
        """Mean inner-lip gap (frames,) in face heights of raw vectors (frames, 27) (linear in them)."""
        from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER

        rest = canonical_face()
        offsets = self.mouth_mean + vectors[:, SLICES.mouth] @ self.mouth_basis
        pos = {int(i): k for k, i in enumerate(self.mouth_index)}
        ys = offsets.reshape(len(vectors), -1, 2)[..., 1]
        low = np.stack([ys[:, pos[i]] + rest[i, 1] for i in LIPS_INNER_LOWER[1:-1]], axis=1)
        up = np.stack([ys[:, pos[i]] + rest[i, 1] for i in LIPS_INNER_UPPER[1:-1]], axis=1)
        return np.maximum(low - up, 0.0).mean(axis=1)

    # --- files ----------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {f"basis.{k}": np.asarray(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MotionBasis:
        try:
            fields = {k: np.asarray(arrays[f"basis.{k}"]) for k in cls.__dataclass_fields__}
        except KeyError as exc:
            raise ConfigError(f"motion weights lack the motion basis ({exc.args[0]})") from None
        for key in ("mouth_mean", "mouth_basis", "brow_mean", "brow_basis", "center", "scale"):
            fields[key] = fields[key].astype(np.float32)
        basis = cls(**fields)
        if basis.mouth_basis.shape[0] != MOUTH_COMPONENTS or basis.center.shape != (MOTION_DIM,):
            raise ConfigError("motion weights were made for another motion layout")
        return basis


def _pca(data: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    mean = data.mean(axis=0)
    _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:components].astype(np.float32)


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(Path(path), **arrays)
