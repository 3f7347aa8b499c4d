"""Identity preservation: distance between 128-d dlib face embeddings (ResNet from face_recognition_models).

dlib's embedding was trained on photographs of real people: two photos of the same person are usually
< 0.6 apart (≈0.3-0.4 for near-identical shots), different people ≈0.8. On paintings, cartoons and
sketches the numbers are less meaningful, and it is blind to texture artefacts that keep the geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.errors import ConfigError

_MODEL_FILES = {
    "shape": "shape_predictor_68_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}


def _models_dir() -> Path:
    """The ``models/`` folder of the face_recognition_models package, found without pkg_resources."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("identity measure needs the face_recognition_models package (pip install .[eval])")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    missing = [name for name in _MODEL_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"face_recognition_models is missing {', '.join(missing)} in {folder}")
    return folder


class FaceEmbedder:
    """dlib HOG face detector + 68-point shape predictor + ResNet face descriptor (CPU)."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise ConfigError("identity measure needs dlib (pip install .[eval])") from None
        folder = _models_dir()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shapes = dlib.shape_predictor(str(folder / _MODEL_FILES["shape"]))
        self._encoder = dlib.face_recognition_model_v1(str(folder / _MODEL_FILES["embedding"]))

    def embed(self, image: np.ndarray, hint_box: Box | None = None) -> np.ndarray | None:
        """128-d float64 descriptor of a face in RGB uint8 ``image`` (h, w, 3), or None if none is found.

        ``hint_box`` (left, top, right, bottom pixels, e.g. from the face mesh) says which face to take:
        dlib's detector runs on a crop around it scaled to a ~160 px face (fast, and it ignores faces
        elsewhere); when dlib finds nothing there (paintings, cartoons) the hint itself is the face box.
        Without a hint the largest face dlib finds in the whole image is used.
        """
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if hint_box is None:
            boxes = list(self._detector(image, 1))
            if not boxes:
                return None
            box = max(boxes, key=lambda b: b.width() * b.height())
            return self._describe(image, box)
        crop, scale, (x0, y0) = _crop_around(image, hint_box)
        hint = self._dlib.rectangle(*(int(round(v)) for v in _to_crop(hint_box, scale, x0, y0)))
        boxes = list(self._detector(crop, 0))
        best = max(boxes, key=lambda b: _iou(b, hint), default=None)
        box = best if best is not None and _iou(best, hint) > 0.3 else hint
        return self._describe(crop, box)

    def _describe(self, image: np.ndarray, box: object) -> np.ndarray:
        shape = self._shapes(image, box)
        return np.asarray(self._encoder.compute_face_descriptor(image, shape), dtype=np.float64)


Box = tuple[int, int, int, int]
FACE_CROP_PIXELS = 160


def _crop_around(image: np.ndarray, box: Box) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The region around ``box`` (one box size of margin), resized so the box is ~160 px wide.

    Returns the crop, the scale applied, and the crop's top-left corner in ``image`` pixels.
    """
    import cv2

    left, top, right, bottom = box
    size = max(right - left, bottom - top, 1)
    h, w = image.shape[:2]
    x0, y0 = max(0, int(left - size)), max(0, int(top - size))
    x1, y1 = min(w, int(right + size)), min(h, int(bottom + size))
    scale = FACE_CROP_PIXELS / size
    crop = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop), scale, (x0, y0)


def _to_crop(box: Box, scale: float, x0: int, y0: int) -> tuple[float, float, float, float]:
    left, top, right, bottom = box
    return (left - x0) * scale, (top - y0) * scale, (right - x0) * scale, (bottom - y0) * scale


def _iou(a: object, b: object) -> float:
    """Intersection over union of two dlib rectangles."""
    inter = a.intersect(b)
    overlap = inter.area() if inter.width() > 0 and inter.height() > 0 else 0
    union = a.area() + b.area() - overlap
    return overlap / union if union > 0 else 0.0


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors (0 = identical)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def mesh_face_box(landmarks: np.ndarray) -> Box | None:
    """A dlib-like face box from one frame's mesh landmarks (478, 2|3) pixels; None when no face.

    dlib's boxes span brows to chin, narrower than the mesh (which reaches the hairline), so the top
    is moved down by a fifth of the mesh height.
    """
    points = landmarks[:, :2]
    if not np.isfinite(points).all():
        return None
    left, top = points.min(axis=0)
    right, bottom = points.max(axis=0)
    top += 0.2 * (bottom - top)
    return int(left), int(top), int(right), int(bottom)
