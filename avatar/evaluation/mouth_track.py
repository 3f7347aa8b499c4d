"""Face-mesh tracking of video frames and the mouth-openness track derived from it.

Landmarks come from MediaPipe's face mesh (478 points with ``refine_landmarks``), in pixels:
``x`` and ``y`` are image coordinates, ``z`` is depth on the ``x`` scale (MediaPipe's convention, origin
near the head centre, smaller = closer to the camera). Frames without a face hold NaN.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

NUM_LANDMARKS = 478
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
FOREHEAD_TOP, CHIN_BOTTOM = 10, 152


class FaceMeshTracker:
    """Runs MediaPipe face mesh on successive RGB frames of one video (tracking mode) or on stills.

    Use one tracker per video: in tracking mode MediaPipe carries the face between frames.
    """

    def __init__(self, video: bool = True) -> None:
        from avatar.facemesh import create_face_mesh

        self._mesh = create_face_mesh(
            static_image_mode=not video, max_num_faces=1, min_detection_confidence=0.5
        )

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        """Landmarks of the face in RGB uint8 ``image`` (h, w, 3): float32 (478, 3) pixels, NaN if none."""
        height, width = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        out = np.full((NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
        if result.multi_face_landmarks:
            points = result.multi_face_landmarks[0].landmark
            out[:] = [(p.x * width, p.y * height, p.z * width) for p in points[:NUM_LANDMARKS]]
        return out

    def track(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """Landmarks of every image: float32 (frames, 478, 3)."""
        rows = [self.landmarks(image) for image in images]
        return np.stack(rows) if rows else np.zeros((0, NUM_LANDMARKS, 3), dtype=np.float32)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMeshTracker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def detected(landmarks: np.ndarray) -> np.ndarray:
    """Bool (frames,): whether a face was found in each frame of (frames, 478, 2|3) landmarks."""
    return np.isfinite(landmarks[:, :, :2]).all(axis=(1, 2))


def face_height(landmarks: np.ndarray) -> np.ndarray:
    """Forehead-top (10) to chin (152) distance in pixels, shape (frames,); NaN where no face."""
    return np.linalg.norm(landmarks[:, FOREHEAD_TOP, :2] - landmarks[:, CHIN_BOTTOM, :2], axis=-1)


def mouth_openness(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap (13-14) divided by face height (10-152), shape (frames,); NaN where no face.

    About 0.0 closed, 0.02-0.08 in speech, up to ~0.15 wide open.
    """
    gap = np.linalg.norm(landmarks[:, UPPER_INNER_LIP, :2] - landmarks[:, LOWER_INNER_LIP, :2], axis=-1)
    height = face_height(landmarks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(height > 0, gap / height, np.nan)
