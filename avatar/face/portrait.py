"""Portrait preparation: load, find the face, frame it square, and precompute the rig for warping."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from avatar.errors import ConfigError, PortraitError
from avatar.face.framing import Framing, head_and_shoulders_crop, parse_framing
from avatar.face.mesh import (
    CHIN,
    FOREHEAD_TOP,
    REGIONS,
    RING_SCALES,
    RestSampler,
    RigMesh,
    WarpGrid,
    build_mesh,
)

MIN_FACE_PX = 64
"""Smallest usable face: height of the landmark box in the source image, pixels."""
GRID_STEP_AT_512 = 4
"""Warp-grid spacing for a 512 px output (scaled with the output size)."""
MAX_SOURCE_SIDE = 4096
"""Larger images are shrunk before detection (MediaPipe works on small inputs anyway)."""


@dataclass
class PortraitRig:
    """Everything precomputed once per portrait; read-only afterwards."""

    image: np.ndarray
    """uint8 (size, size, 3) RGB, the portrait at output framing."""
    landmarks: np.ndarray
    """float32 (478, 2) MediaPipe face-mesh landmarks, pixel coordinates in ``image``."""
    face_box: tuple[int, int, int, int]
    """x0, y0, x1, y1 of the landmarks in ``image`` (pixels, exclusive end)."""
    warnings: list[str] = field(default_factory=list)
    depth: np.ndarray | None = None
    """float32 (478,) landmark depth in pixels (MediaPipe z; smaller is nearer the camera)."""
    head_pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Rough pitch, yaw, roll of the portrait's head in radians (FaceMotion's signs; see head_pose)."""
    mesh: RigMesh | None = None
    """Triangle mesh over the whole image (face, hair/neck rings, frame)."""
    sampler: RestSampler | None = None
    """Coarse warp grid over the whole image with rest-pose barycentrics."""

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def face_height(self) -> float:
        """Forehead-top (10) to chin (152) distance in pixels."""
        return float(np.linalg.norm(self.landmarks[FOREHEAD_TOP] - self.landmarks[CHIN]))

    def region(self, name: str) -> np.ndarray:
        """Outline (k, 2) float32 in ``image`` pixels of a named region (see ``mesh.REGIONS``):
        face, lips, mouth (inner-lip opening), left_eye / right_eye (image left / right), left_brow /
        right_brow, jaw (open polyline ear to ear through the chin)."""
        if name not in REGIONS:
            raise KeyError(f"unknown region {name!r}; choose one of: {', '.join(REGIONS)}")
        return self.landmarks[list(REGIONS[name])].copy()


# --- loading ------------------------------------------------------------------------------------

def load_portrait_image(portrait: str | Path | np.ndarray) -> np.ndarray:
    """Read a path or take an array (RGB, RGBA, gray; uint8/uint16/float) and return uint8 RGB (h, w, 3)."""
    if isinstance(portrait, np.ndarray):
        return _to_rgb8(portrait, "portrait array")
    path = Path(portrait)
    if not path.exists():
        raise PortraitError(f"portrait not found: {path}")
    if not path.is_file():
        raise PortraitError(f"portrait is not a file: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise PortraitError(f"not a readable image (PNG, JPEG, WebP, BMP, TIFF): {path.name}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    else:  # decode again as colour: this applies the EXIF orientation of camera photos
        image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return _to_rgb8(image, path.name)


def _to_rgb8(image: np.ndarray, name: str) -> np.ndarray:
    if image.ndim not in (2, 3) or image.shape[0] < 2 or image.shape[1] < 2:
        raise PortraitError(f"not an image: {name} has shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        values = np.nan_to_num(image.astype(np.float32))
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        image = np.clip(values * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels in (2, 4):  # composite over white
        alpha = image[:, :, -1:].astype(np.float32) / 255.0
        color = image[:, :, :-1].astype(np.float32)
        image = np.clip(color * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
        channels -= 1
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels != 3:
        raise PortraitError(f"not an image: {name} has {channels} channels")
    return np.ascontiguousarray(image)


# --- detection ----------------------------------------------------------------------------------

class _FaceMeshDetector:
    """Shared MediaPipe FaceMesh (static images, refined: 478 points), serialised by a lock."""

    _lock = threading.Lock()
    _mesh = None

    @classmethod
    def detect(cls, rgb: np.ndarray) -> list[np.ndarray]:
        """Faces in ``rgb`` as float32 (478, 3) arrays of pixel x, y and z (z in x's pixel scale)."""
        with cls._lock:
            if cls._mesh is None:
                from avatar.facemesh import create_face_mesh

                cls._mesh = create_face_mesh(static_image_mode=True, max_num_faces=4)
            result = cls._mesh.process(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            if len(pts) == 478:
                faces.append(pts)
        return faces


def face_mesh(rgb: np.ndarray) -> list[np.ndarray]:
    """MediaPipe's face mesh run once on the whole uint8 RGB image (no tile search, as an evaluation
    would run it): faces as float32 (478, 3) pixel x, y and depth."""
    return _FaceMeshDetector.detect(rgb)


def detect_faces(rgb: np.ndarray) -> list[np.ndarray]:
    """All faces (478, 3) in the image, largest first. Searches tiles when the whole image has none."""
    faces = _FaceMeshDetector.detect(rgb)
    if not faces:
        faces = _detect_in_tiles(rgb)
    return sorted(faces, key=lambda f: -_box_area(f))


def _detect_in_tiles(rgb: np.ndarray) -> list[np.ndarray]:
    """Look for faces too small for the whole-image detector in overlapping square tiles."""
    h, w = rgb.shape[:2]
    found: list[np.ndarray] = []
    for divisions in (2, 4):
        side = max(min(h, w) // divisions, 96)
        if side >= min(h, w) and divisions > 2:
            break
        stride = max(side // 2, 1)
        for y in range(0, max(h - side, 0) + 1, stride):
            for x in range(0, max(w - side, 0) + 1, stride):
                tile = rgb[y:y + side, x:x + side]
                scale = 256.0 / max(tile.shape[:2])
                tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                for face in _FaceMeshDetector.detect(tile):
                    face = face / scale + np.array([x, y, 0], dtype=np.float32)
                    if all(_overlap(face, other) < 0.3 for other in found):
                        found.append(face)
        if found:
            break
    return found


def _box(face: np.ndarray) -> np.ndarray:
    return np.concatenate([face[:, :2].min(axis=0), face[:, :2].max(axis=0)])


def _box_area(face: np.ndarray) -> float:
    x0, y0, x1, y1 = _box(face)
    return float((x1 - x0) * (y1 - y0))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two faces' landmark boxes."""
    ba, bb = _box(a), _box(b)
    iw = max(0.0, min(ba[2], bb[2]) - max(ba[0], bb[0]))
    ih = max(0.0, min(ba[3], bb[3]) - max(ba[1], bb[1]))
    inter = iw * ih
    return inter / max(_box_area(a) + _box_area(b) - inter, 1e-6)


# --- framing ------------------------------------------------------------------------------------

def square_crop(width: int, height: int, face_box: np.ndarray) -> tuple[float, float, float]:
    """Square crop (x0, y0, side) in source pixels that keeps head and shoulders.

    Square portraits keep their whole frame unless the face is tiny (under a fifth of the side);
    other shapes get the largest square that fits, placed around the face. Tiny faces get a crop
    about four face heights tall so that the face is a reasonable share of the frame.
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    face_h = max(y1 - y0, x1 - x0)
    short = float(min(width, height))
    side = short if face_h * 5.0 >= short else max(face_h * 4.0, 1.0)
    if side >= short and width == height:
        return 0.0, 0.0, short
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left = float(np.clip(cx - side / 2.0, 0.0, width - side))
    top = float(np.clip(cy - 0.42 * side, 0.0, height - side))  # face a bit above centre
    return left, top, side


def framing_crop(width: int, height: int, face: np.ndarray, framing: Framing) -> tuple[float, float, float]:
    """Square crop (x0, y0, side) in source pixels for ``framing`` of a face (landmarks (478, 2+), pixels)."""
    if framing == Framing.HEAD_AND_SHOULDERS:
        return head_and_shoulders_crop(width, height, face)
    return square_crop(width, height, _box(face))


def frame_image(rgb: np.ndarray, crop: tuple[float, float, float], size: int) -> np.ndarray:
    """Cut the square ``crop`` (x0, y0, side) and resize it to ``size`` x ``size``."""
    x0, y0, side = crop
    scale = size / side
    matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    if interp == cv2.INTER_AREA:
        ix0, iy0, iside = int(round(x0)), int(round(y0)), int(round(side))
        cut = rgb[iy0:iy0 + iside, ix0:ix0 + iside]
        return cv2.resize(cut, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(rgb, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def head_pose(face: np.ndarray) -> tuple[float, float, float]:
    """Rough (pitch, yaw, roll) in radians from 3D landmarks (478, 3) in pixels, FaceMotion's signs.

    Pitch is measured between the forehead top and the chin, so a frontal face reads about +0.1.
    """
    left_eye, right_eye = face[33], face[263]
    roll = float(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    side_l, side_r = face[234], face[454]  # the far side of a turned face has the larger depth
    yaw = float(np.arctan2(side_r[2] - side_l[2], side_r[0] - side_l[0]))
    top, chin = face[FOREHEAD_TOP], face[CHIN]  # nodding down brings the forehead nearer
    pitch = float(np.arctan2(chin[2] - top[2], chin[1] - top[1]))
    return pitch, yaw, roll


# --- entry point --------------------------------------------------------------------------------

def prepare_portrait(portrait: str | Path | np.ndarray, size: int = 512,
                     framing: Framing | str = Framing.FULL) -> PortraitRig:
    """Load and analyse a portrait once, framed square at ``size`` px as ``framing`` says
    (``avatar.face.framing``: ``full`` or ``head_and_shoulders``; a bad value raises ``ConfigError``).

    Raises ``PortraitError`` with a one-line message: file missing, not an image, no face found, face
    too small (size found and the minimum). With several faces the largest is used and a warning
    'found N faces; animating the largest' is added.
    """
    if size < 64:
        raise ConfigError(f"output size {size} is too small (minimum 64 px)")
    framing = parse_framing(framing)
    rgb = load_portrait_image(portrait)
    shrink = min(1.0, MAX_SOURCE_SIDE / max(rgb.shape[:2]))
    if shrink < 1.0:
        rgb = cv2.resize(rgb, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    faces = detect_faces(rgb)
    if not faces:
        raise PortraitError("no face found in the portrait; use a clear, front-facing picture of one face")
    warnings = []
    if len(faces) > 1:
        warnings.append(f"found {len(faces)} faces; animating the largest")
    face = faces[0]
    box = _box(face)
    face_px = float(max(box[2] - box[0], box[3] - box[1]))
    if face_px < MIN_FACE_PX:
        raise PortraitError(f"face too small: about {face_px:.0f} px across, need at least {MIN_FACE_PX} px; "
                            "use a larger or closer-cropped portrait")

    height, width = rgb.shape[:2]
    crop = framing_crop(width, height, face, framing)
    image = frame_image(rgb, crop, size)
    framed = _landmarks_in_frame(image, face, crop, size)
    if crop[2] / size < 0.5 and face_px < 2 * MIN_FACE_PX:
        warnings.append(f"portrait face is only {face_px:.0f} px; the output will look soft")

    pose = head_pose(framed)
    if abs(pose[1]) > 0.6:
        warnings.append("the face is turned far from the camera; animation may look odd")
    pts = framed[:, :2]
    lo = np.floor(pts.min(axis=0)).astype(int).clip(0, size)
    hi = np.ceil(pts.max(axis=0)).astype(int).clip(0, size)
    mesh = build_mesh(framed, size)
    step = max(1, round(GRID_STEP_AT_512 * size / 512))
    return PortraitRig(
        image=image,
        landmarks=pts.astype(np.float32).copy(),
        face_box=(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])),
        warnings=warnings,
        depth=framed[:, 2].astype(np.float32).copy(),
        head_pose=pose,
        mesh=mesh,
        sampler=RestSampler(WarpGrid.covering(0, 0, size, size, step), mesh,
                            still=mesh.ring_level >= RING_SCALES[-1]),
    )


def _landmarks_in_frame(image: np.ndarray, face: np.ndarray, crop: tuple[float, float, float],
                        size: int) -> np.ndarray:
    """Landmarks (478, 3) in output pixels: the mesh run again on the framed image, matched to ``face``."""
    x0, y0, side = crop
    scale = size / side
    expected = (face - np.array([x0, y0, 0.0], dtype=np.float32)) * scale
    candidates = _FaceMeshDetector.detect(image)
    best = max(candidates, key=lambda f: _overlap(f, expected), default=None)
    if best is not None and _overlap(best, expected) > 0.5:
        return best
    return expected.astype(np.float32)


__all__ = ["PortraitRig", "prepare_portrait", "Framing", "load_portrait_image", "detect_faces", "face_mesh",
           "MIN_FACE_PX"]
