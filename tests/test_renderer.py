"""Mesh-warp renderer on the shipped astronaut, checked with MediaPipe's face mesh on the output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.parametric.motion_types import FaceMotion
from avatar.parametric.portrait import face_mesh, prepare_portrait
from avatar.parametric.renderer import JAW_GAP, MotionModel, PortraitRenderer, clamp_motion

ASTRONAUT_PATH = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"


@pytest.fixture(scope="module")
def renderer() -> PortraitRenderer:
    return PortraitRenderer(prepare_portrait(ASTRONAUT_PATH))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _face(frame: np.ndarray) -> np.ndarray:
    """Largest face's landmarks (478, 2) found by MediaPipe in a rendered frame."""
    faces = face_mesh(frame)
    assert faces, "MediaPipe lost the face"
    return faces[0][:, :2]


def _lip_gap(frame: np.ndarray) -> float:
    """Inner-lip gap (13-14) over face height (10-152), as the evaluation measures it."""
    f = _face(frame)
    return float(np.linalg.norm(f[13] - f[14]) / np.linalg.norm(f[10] - f[152]))


def _eye_opening(frame: np.ndarray) -> float:
    f = _face(frame)
    opening = np.linalg.norm(f[159] - f[145]) + np.linalg.norm(f[386] - f[374])
    return float(opening / 2 / np.linalg.norm(f[10] - f[152]))


def test_output_shape_and_type(renderer) -> None:
    for motion in (FaceMotion(), FaceMotion(jaw_open=0.7, blink=0.3, head_yaw=0.1), FaceMotion(breath=1)):
        frame = renderer.render(motion)
        assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
        assert frame.flags["C_CONTIGUOUS"]


def test_rest_reproduces_the_portrait(renderer) -> None:
    image = renderer.rig.image
    assert _psnr(renderer.render(FaceMotion()), image) > 60
    # a barely-moving frame goes through the whole warp path and must still match closely
    assert _psnr(renderer.render(FaceMotion(jaw_open=0.002, head_roll=0.0005)), image) > 40


def test_render_does_not_modify_the_rig(renderer) -> None:
    before = renderer.rig.image.copy()
    renderer.render(FaceMotion(jaw_open=1.0, blink=1.0, head_roll=0.2))
    assert np.array_equal(renderer.rig.image, before)


def test_jaw_changes_the_mouth_not_the_far_background(renderer) -> None:
    rest = renderer.rig.image.astype(np.int16)
    frame = renderer.render(FaceMotion(jaw_open=1.0)).astype(np.int16)
    lm = renderer.rig.landmarks
    x0, y0 = (lm[[61, 291, 13, 14]].min(axis=0) - 4).astype(int)
    x1, y1 = (lm[[61, 291, 13, 14]].max(axis=0) + 12).astype(int)
    assert np.abs(frame[y0:y1, x0:x1] - rest[y0:y1, x0:x1]).mean() > 15
    for corner in (np.s_[:48, :48], np.s_[:48, -48:], np.s_[-48:, :48], np.s_[-48:, -48:]):
        assert np.abs(frame[corner] - rest[corner]).max() <= 1
    # the upper face does not move with the jaw
    eyes = np.s_[int(lm[159, 1]) - 8:int(lm[145, 1]) + 8, int(lm[33, 0]) - 8:int(lm[263, 0]) + 8]
    assert np.abs(frame[eyes] - rest[eyes]).mean() < 2


def test_measured_lip_gap_grows_with_jaw_open(renderer) -> None:
    gaps = [_lip_gap(renderer.render(FaceMotion(jaw_open=j))) for j in (0.0, 0.35, 0.7, 1.0)]
    assert all(b > a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] >= 0.08 and gaps[-1] - gaps[0] >= 0.04, gaps
    assert abs(gaps[0] - _lip_gap(renderer.rig.image)) < 0.01


def _full_open_gap(rig) -> float:
    """Inner-lip gap at the mouth centre (vertices 13/14) at jaw_open = 1, in face heights."""
    model = MotionModel(rig)
    moved = rig.mesh.vertices + model.displacements(FaceMotion(jaw_open=1.0))
    return float((moved[14] - moved[13]) @ model.ey / rig.face_height)


def test_full_open_mouth_is_as_tall_as_a_real_wide_open_mouth(renderer) -> None:
    # Real speakers open to ~0.12-0.18 face heights on open vowels, even with a narrow mouth.
    rig = renderer.rig
    assert _full_open_gap(rig) == pytest.approx(JAW_GAP, abs=0.005)
    lm = rig.landmarks.copy()
    corners = [61, 78, 291, 308]
    centre = lm[corners].mean(axis=0)
    half = np.linalg.norm(lm[[291, 308]].mean(axis=0) - lm[[61, 78]].mean(axis=0)) / 2
    lm[corners] = centre + (lm[corners] - centre) * (0.12 * rig.face_height / half)  # half width 0.12
    narrow = _full_open_gap(dataclasses.replace(rig, landmarks=lm))
    assert 0.14 <= narrow < JAW_GAP - 0.01  # taller than half the mouth's width, less than a wide mouth


def test_lip_press_closes_the_open_mouth(renderer) -> None:
    # the astronaut smiles with parted lips; pressing them closes the measured gap
    open_gap = _lip_gap(renderer.rig.image)
    assert _lip_gap(renderer.render(FaceMotion(lip_press=1.0))) < 0.6 * open_gap


def test_blink_closes_the_eyes(renderer) -> None:
    opened = _eye_opening(renderer.render(FaceMotion()))
    half = _eye_opening(renderer.render(FaceMotion(blink=0.5)))
    closed = _eye_opening(renderer.render(FaceMotion(blink=1.0)))
    assert closed < 0.4 * opened and closed < half < opened


def test_blink_lid_is_skin_coloured_not_black(renderer) -> None:
    frame = renderer.render(FaceMotion(blink=1.0)).astype(float)
    lm = renderer.rig.landmarks
    # the middle of the former eye opening, just above the lash line, is now lid skin
    for top, bottom in ((159, 145), (386, 374)):
        x = int(round(lm[top, 0]))
        y = int(round(lm[top, 1] + 0.35 * (lm[bottom, 1] - lm[top, 1])))
        forehead = frame[int(lm[9, 1]) - 3:int(lm[9, 1]) + 3, int(lm[9, 0]) - 3:int(lm[9, 0]) + 3].mean()
        assert frame[y - 1:y + 1, x - 1:x + 1].mean() > 0.5 * forehead


def test_brows_rise(renderer) -> None:
    rest, raised = _face(renderer.render(FaceMotion())), _face(renderer.render(FaceMotion(brow_raise=1.0)))
    height = np.linalg.norm(rest[10] - rest[152])
    assert (rest[[105, 334], 1] - raised[[105, 334], 1]).mean() > 0.01 * height


def test_head_rotation_signs(renderer) -> None:
    rest = _face(renderer.render(FaceMotion()))

    def roll(f: np.ndarray) -> float:
        return float(np.arctan2(f[263, 1] - f[33, 1], f[263, 0] - f[33, 0]))

    clockwise = _face(renderer.render(FaceMotion(head_roll=0.15)))
    assert roll(clockwise) - roll(rest) > 0.08  # clockwise in the image (y down) increases the angle
    right = _face(renderer.render(FaceMotion(head_yaw=0.2)))
    assert right[1, 0] - rest[1, 0] > 2  # the nose tip moves to the viewer's right
    down = _face(renderer.render(FaceMotion(head_pitch=0.2)))
    nose_to_eyes = lambda f: f[1, 1] - (f[33, 1] + f[263, 1]) / 2  # noqa: E731
    assert nose_to_eyes(down) > nose_to_eyes(rest)


def test_face_stays_detectable_across_motions(renderer) -> None:
    rng = np.random.default_rng(7)
    motions = [FaceMotion(jaw_open=rng.uniform(0, 1), lip_width=rng.uniform(-1, 1),
                          lip_press=rng.uniform(0, 1),
                          blink=rng.uniform(0, 1), brow_raise=rng.uniform(0, 1),
                          head_pitch=rng.uniform(-0.25, 0.25), head_yaw=rng.uniform(-0.25, 0.25),
                          head_roll=rng.uniform(-0.25, 0.25), breath=rng.uniform(-1, 1)) for _ in range(20)]
    found = sum(bool(face_mesh(renderer.render(m))) for m in motions)
    assert found >= 19


def test_breath_moves_only_the_body(renderer) -> None:
    rest = renderer.rig.image.astype(np.int16)
    frame = renderer.render(FaceMotion(breath=1.0)).astype(np.int16)
    lm = renderer.rig.landmarks
    chest = np.s_[int(lm[152, 1]) + 60:, 100:400]
    assert np.abs(frame[chest] - rest[chest]).mean() > 0.5
    face = np.s_[int(lm[10, 1]):int(lm[152, 1]), int(lm[234, 0]):int(lm[454, 0])]
    assert np.abs(frame[face] - rest[face]).max() <= 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e9, -1e9])
def test_extreme_and_invalid_motion_values_are_clamped(renderer, value: float) -> None:
    motion = FaceMotion(jaw_open=value, lip_width=value, lip_press=value, blink=value, brow_raise=value,
                        head_pitch=value, head_yaw=value, head_roll=value, breath=value)
    frame = renderer.render(motion)
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    clamped = clamp_motion(motion)
    values = np.array([getattr(clamped, k) for k in FaceMotion.__dataclass_fields__])
    assert np.isfinite(values).all()
    assert 0 <= clamped.jaw_open <= 1 and -1 <= clamped.lip_width <= 1 and abs(clamped.head_roll) <= 0.25


def test_extreme_motion_keeps_a_face(renderer) -> None:
    for sign in (1, -1):
        motion = FaceMotion(jaw_open=1, lip_width=sign, lip_press=0, blink=1, brow_raise=1,
                            head_pitch=0.25 * sign, head_yaw=0.25 * sign, head_roll=0.25 * sign, breath=sign)
        frame = renderer.render(motion)
        assert face_mesh(frame)
        assert frame.std() > 20  # not blank, not smeared flat


def test_stage_timings_are_reported(renderer) -> None:
    renderer.render(FaceMotion(jaw_open=0.5, blink=0.5, head_yaw=0.05))
    assert {"motion", "coarse grid", "remap", "mouth"} <= set(renderer.stage_ms)
    assert all(ms >= 0 for ms in renderer.stage_ms.values())


def test_exact_inverse_of_a_small_mesh() -> None:
    """Backward offsets map every node onto the rest point the piecewise-affine warp sends to it."""
    from avatar.parametric.mesh import WarpGrid

    rest_v = np.array([[0, 0], [40, 0], [0, 40], [40, 40], [20, 20]], dtype=np.float64)
    tris = np.array([[0, 1, 4], [1, 3, 4], [3, 2, 4], [2, 0, 4]])
    moved_v = rest_v.copy()
    moved_v[4] = [27, 15]
    grid = WarpGrid.covering(0, 0, 40, 40, 2)
    offsets = grid.exact_offsets(rest_v[tris], moved_v[tris], np.arange(len(tris)))
    half = (grid.step - 1) / 2
    checked = 0
    for row in range(grid.shape[0]):
        for col in range(grid.shape[1]):
            node = np.array([col * grid.step + half, row * grid.step + half])
            for tri in tris:
                a, b, c = moved_v[tri]
                w1, w2 = np.linalg.solve(np.column_stack([b - a, c - a]), node - a)
                if min(w1, w2, 1 - w1 - w2) > 1e-6:
                    r = rest_v[tri]
                    expected = r[0] + w1 * (r[1] - r[0]) + w2 * (r[2] - r[0])
                    assert np.allclose(node + offsets[row, col], expected, atol=1e-4)
                    checked += 1
    assert checked > 300


def test_fixed_point_inverse_of_a_smooth_field(renderer) -> None:
    sampler = renderer.rig.sampler
    rows, cols = sampler.grid.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    field = np.dstack([3.0 + 0.05 * xx, -2.0 + 0.03 * yy]).astype(np.float32)  # smooth, gradient << 1
    offsets = sampler.invert(field, slice(10, 40), slice(10, 40))
    step = sampler.grid.step
    # y = x + offset must satisfy y + field(y) = x (field is linear in grid units)
    y_col = xx[10:40, 10:40] + offsets[:, :, 0] / step
    y_row = yy[10:40, 10:40] + offsets[:, :, 1] / step
    fx, fy = 3.0 + 0.05 * y_col, -2.0 + 0.03 * y_row
    assert np.allclose(offsets[:, :, 0], -fx, atol=1e-3) and np.allclose(offsets[:, :, 1], -fy, atol=1e-3)


def test_open_mouth_interior_is_dark_and_fits_the_portrait(renderer) -> None:
    frame = renderer.render(FaceMotion(jaw_open=1.0))
    f = _face(frame)
    luma = frame.astype(float) @ np.array([0.299, 0.587, 0.114])
    x, y = np.round(f[13] + 0.75 * (f[14] - f[13])).astype(int)  # low in the opened mouth
    lips = luma[np.round(f[[0, 17, 37, 84], 1]).astype(int), np.round(f[[0, 17, 37, 84], 0]).astype(int)]
    assert luma[y - 1:y + 2, x - 1:x + 2].mean() < 0.6 * lips.mean()


def test_grayscale_portrait_gets_a_grayscale_mouth() -> None:
    gray = cv2.cvtColor(cv2.imread(str(ASTRONAUT_PATH), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2RGB)
    frame = PortraitRenderer(prepare_portrait(gray, size=256)).render(FaceMotion(jaw_open=1.0, lip_width=0.3))
    spread = frame.astype(int).max(axis=2) - frame.astype(int).min(axis=2)
    assert spread.max() <= 2  # no colour anywhere, the painted interior included
