"""Portrait preparation: loading, face detection, framing and the warp mesh (shipped astronaut only)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.errors import PortraitError
from avatar.face.mesh import (
    EYE_LOWER,
    EYE_UPPER,
    FACE_OVAL,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    face_triangles,
)
from avatar.face.portrait import (
    MIN_FACE_PX,
    load_portrait_image,
    prepare_portrait,
    square_crop,
)

ASTRONAUT_PATH = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_portrait_image(ASTRONAUT_PATH)


@pytest.fixture(scope="module")
def rig():
    return prepare_portrait(ASTRONAUT_PATH)


def _canvas(width: int, height: int, *items: tuple[np.ndarray, int, int]) -> np.ndarray:
    canvas = np.full((height, width, 3), 255, np.uint8)
    for image, x, y in items:
        canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
    return canvas


def _one_line_error(portrait, size: int = 512) -> str:
    with pytest.raises(PortraitError) as info:
        prepare_portrait(portrait, size=size)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_shipped_portrait_is_prepared(rig) -> None:
    assert rig.image.shape == (512, 512, 3) and rig.image.dtype == np.uint8
    assert rig.landmarks.shape == (478, 2) and rig.landmarks.dtype == np.float32
    assert np.all(rig.landmarks >= 0) and np.all(rig.landmarks < 512)
    x0, y0, x1, y1 = rig.face_box
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    assert (rig.landmarks[:, 0] >= x0 - 1).all() and (rig.landmarks[:, 0] <= x1 + 1).all()
    assert rig.warnings == []
    assert 60 < rig.face_height < 200
    # forehead above chin, the image-left eye left of the image-right eye, mouth below the nose
    assert rig.landmarks[10, 1] < rig.landmarks[152, 1]
    assert rig.landmarks[33, 0] < rig.landmarks[263, 0]
    assert rig.landmarks[13, 1] > rig.landmarks[1, 1]
    assert all(abs(angle) < 0.5 for angle in rig.head_pose)


def test_square_portrait_keeps_its_whole_frame(rig, astronaut) -> None:
    # landmarks of the output must match the source image (same framing, same pixels)
    assert np.abs(rig.image.astype(int) - astronaut.astype(int)).mean() < 1.0


def test_mesh_covers_the_whole_image(rig) -> None:
    mesh, sampler = rig.mesh, rig.sampler
    assert mesh.vertices.shape[1] == 2 and np.isfinite(mesh.vertices).all()
    assert mesh.triangles.min() >= 0 and mesh.triangles.max() < len(mesh.vertices)
    assert (sampler.node_triangle >= 0).all()  # every grid node lies in a rest triangle
    rows, cols = sampler.grid.shape
    assert rows * sampler.grid.step >= 512 and cols * sampler.grid.step >= 512
    # some triangles reach beyond the image on every side (the frame ring)
    assert mesh.vertices[:, 0].min() < 0 and mesh.vertices[:, 1].max() > 512


def test_face_tessellation_and_landmark_contours_match_mediapipe() -> None:
    from mediapipe.python.solutions import face_mesh_connections as fmc

    assert face_triangles().shape == (852, 3)

    def edges(*chains: tuple[int, ...]) -> set[frozenset[int]]:
        return {frozenset(pair) for chain in chains for pair in zip(chain, chain[1:], strict=False)}

    assert edges(LIPS_OUTER_UPPER, LIPS_OUTER_LOWER, LIPS_INNER_UPPER, LIPS_INNER_LOWER) <= {
        frozenset(e) for e in fmc.FACEMESH_LIPS}
    eyes = {frozenset(e) for e in fmc.FACEMESH_LEFT_EYE | fmc.FACEMESH_RIGHT_EYE}
    assert edges(*EYE_UPPER, *EYE_LOWER) <= eyes
    assert edges(FACE_OVAL + FACE_OVAL[:1]) <= {frozenset(e) for e in fmc.FACEMESH_FACE_OVAL}


def test_other_sizes_and_pixel_formats(astronaut) -> None:
    small = prepare_portrait(astronaut, size=256)
    assert small.image.shape == (256, 256, 3)
    assert np.all(small.landmarks < 256)
    gray = prepare_portrait(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY), size=256)
    assert gray.image.shape == (256, 256, 3)
    assert np.all(gray.image[:, :, 0] == gray.image[:, :, 1])
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert prepare_portrait(rgba, size=256).image.shape == (256, 256, 3)


def test_pixel_format_conversions() -> None:
    gray16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    assert load_portrait_image(gray16).shape == (64, 64, 3)
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent -> white
    assert (load_portrait_image(rgba) == 255).all()
    floats = np.full((8, 8, 3), 0.5, np.float32)
    assert abs(int(load_portrait_image(floats)[0, 0, 0]) - 128) <= 1
    with pytest.raises(PortraitError):
        load_portrait_image(np.zeros((1, 5, 3), np.uint8))


def test_tall_portrait_is_cropped_square_around_the_face(astronaut) -> None:
    tall = _canvas(512, 900, (astronaut, 0, 300))
    rig = prepare_portrait(tall, size=384)
    assert rig.image.shape == (384, 384, 3)
    x0, y0, x1, y1 = rig.face_box
    assert 0 < y0 and y1 < 384 * 0.8  # face fully inside, room for the shoulders below


def test_square_crop_rules() -> None:
    # square portrait with a reasonable face: the whole frame
    assert square_crop(600, 600, np.array([250, 200, 350, 330])) == (0.0, 0.0, 600.0)
    # tall portrait: the largest square, face inside and a bit above the centre
    x, y, side = square_crop(400, 900, np.array([150, 500, 250, 620]))
    assert side == 400 and 0 <= y <= 500 and y + side >= 620
    # tiny face in a wide frame: a crop about four face heights
    x, y, side = square_crop(3000, 1000, np.array([2000, 400, 2050, 460]))
    assert side == pytest.approx(240) and x <= 2000 and x + side >= 2050 and y <= 400


def test_missing_file(tmp_path) -> None:
    message = _one_line_error(tmp_path / "nobody.png")
    assert "not found" in message and "nobody.png" in message


def test_text_file_named_png(tmp_path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture\n")
    assert "not a readable image" in _one_line_error(fake)


def test_directory_is_not_a_portrait(tmp_path) -> None:
    assert "not a file" in _one_line_error(tmp_path)


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_image_without_a_face(kind: str) -> None:
    rng = np.random.default_rng(1)
    image = (rng.integers(0, 256, (384, 384, 3), dtype=np.uint8) if kind == "noise"
             else np.full((300, 400, 3), (120, 160, 200), np.uint8))
    assert "no face found" in _one_line_error(image)


def test_face_too_small(astronaut) -> None:
    tiny = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)  # face about 33 px
    message = _one_line_error(_canvas(1024, 1024, (tiny, 400, 300)))
    assert "too small" in message and f"{MIN_FACE_PX} px" in message
    found = int(message.split("about ")[1].split(" px")[0])
    assert 20 <= found < MIN_FACE_PX


def test_two_faces_animate_the_largest(astronaut) -> None:
    smaller = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)
    rig = prepare_portrait(_canvas(1000, 512, (astronaut, 0, 0), (smaller, 600, 64)), size=256)
    assert rig.warnings == ["found 2 faces; animating the largest"]
    # the square crop is taken around the larger (left) face: it is the whole left astronaut
    expected = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(rig.image.astype(int) - expected.astype(int)).mean() < 2.0


def test_named_regions(rig) -> None:
    mouth, lips = rig.region("mouth"), rig.region("lips")
    assert mouth.shape == (20, 2) and lips.shape == (20, 2)
    assert cv2.contourArea(mouth) < cv2.contourArea(lips)  # the opening lies inside the lips
    for eye in ("left_eye", "right_eye"):
        assert rig.region(eye)[:, 1].max() < lips[:, 1].min()
    assert rig.region("left_eye")[:, 0].mean() < rig.region("right_eye")[:, 0].mean()
    jaw = rig.region("jaw")
    assert jaw[:, 1].max() == pytest.approx(rig.landmarks[152, 1])  # runs through the chin
    with pytest.raises(KeyError):
        rig.region("tail")


def test_camera_rotation_tag_is_applied(tmp_path, astronaut) -> None:
    image_module = pytest.importorskip("PIL.Image")
    path = tmp_path / "phone.jpg"
    # stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise to display")
    stored = image_module.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1)))
    exif = image_module.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=95, exif=exif)
    rig = prepare_portrait(path, size=256)
    assert abs(rig.head_pose[2]) < 0.3  # upright: the eye line is level, not vertical
    expected = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(rig.image.astype(int) - expected.astype(int)).mean() < 6.0


def test_tiny_output_size_is_a_config_error(astronaut) -> None:
    from avatar.errors import ConfigError

    with pytest.raises(ConfigError):
        prepare_portrait(astronaut, size=32)
