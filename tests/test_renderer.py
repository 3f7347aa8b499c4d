"""Mesh-warp renderer on the shipped astronaut, checked with MediaPipe's face mesh on the output."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.face.motion_types import SCALAR_FIELDS, FaceMotion
from avatar.face.portrait import face_mesh, prepare_portrait
from avatar.face.renderer import JAW_GAP, MotionModel, PortraitRenderer, clamp_motion

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
    values = np.array([getattr(clamped, k) for k in SCALAR_FIELDS])
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
    from avatar.face.mesh import WarpGrid

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


# --- learned full face shape (FaceMotion.expression) ---------------------------------------------------


def _jaw_expression(renderer: PortraitRenderer, amount: float) -> np.ndarray:
    """Expression (468, 2) moving the lower lip, chin and jaw down by ``amount`` face heights (the
    rig's own jaw shape: 1 on the lower inner lip and the chin, fading toward the corners and cheeks)."""
    e = np.zeros((468, 2), np.float32)
    e[:, 1] = amount * renderer.model.jaw[:468]
    return e


def _signed_gaps(renderer: PortraitRenderer, motion: FaceMotion) -> np.ndarray:
    """Inner-lip gaps (11,) along the face's down axis after ``motion``, in pixels."""
    from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER

    model = renderer.model
    moved = renderer.rig.mesh.vertices + model.displacements(clamp_motion(motion))
    return (moved[list(LIPS_INNER_LOWER)] - moved[list(LIPS_INNER_UPPER)]) @ model.ey


def _mouth_width(frame: np.ndarray) -> float:
    f = _face(frame)
    return float(np.linalg.norm(f[61] - f[291]) / np.linalg.norm(f[10] - f[152]))


def test_zero_expression_renders_exactly_like_none(renderer) -> None:
    zeros = np.zeros((468, 2), np.float32)
    moving = FaceMotion(jaw_open=0.5, lip_width=0.3, blink=0.4, head_yaw=0.1, breath=0.5)
    for motion in (FaceMotion(), moving):
        assert np.array_equal(renderer.render(dataclasses.replace(motion, expression=zeros)),
                              renderer.render(motion))


def test_expression_opening_the_jaw_opens_the_rendered_mouth_with_a_dark_interior(renderer) -> None:
    rest_gap = _lip_gap(renderer.rig.image)
    frame = renderer.render(FaceMotion(expression=_jaw_expression(renderer, 0.08)))
    assert _lip_gap(frame) - rest_gap > 0.03
    f = _face(frame)
    luma = frame.astype(float) @ np.array([0.299, 0.587, 0.114])
    x, y = np.round(f[13] + 0.75 * (f[14] - f[13])).astype(int)  # low in the opened mouth
    lips = luma[np.round(f[[0, 17, 37, 84], 1]).astype(int), np.round(f[[0, 17, 37, 84], 0]).astype(int)]
    assert luma[y - 1:y + 2, x - 1:x + 2].mean() < 0.6 * lips.mean()


def test_expression_closing_the_mouth_paints_no_interior(renderer) -> None:
    # lower lip up to the upper one: the mouth closes and nothing dark is painted between the lips
    gaps = _signed_gaps(renderer, FaceMotion(expression=_jaw_expression(renderer, -0.2)))
    assert np.abs(gaps).max() < 0.5
    assert _lip_gap(renderer.render(FaceMotion(expression=_jaw_expression(renderer, -0.2)))) < 0.02


def test_expression_adds_to_jaw_open_within_the_jaw_limit(renderer) -> None:
    model, height = renderer.model, renderer.rig.face_height
    expression = _jaw_expression(renderer, 0.04)
    jaw = _signed_gaps(renderer, FaceMotion(jaw_open=0.3))[5]
    both = _signed_gaps(renderer, FaceMotion(jaw_open=0.3, expression=expression))[5]
    assert both - jaw == pytest.approx(0.04 * height, rel=0.02)
    assert _signed_gaps(renderer, FaceMotion(expression=_jaw_expression(renderer, 0.25))).max() \
        <= model.metrics.max_gap + 1e-6
    assert _signed_gaps(renderer, FaceMotion(jaw_open=1.0, expression=expression)).max() \
        <= model.metrics.max_gap + 1e-6
    assert model.metrics.max_gap == pytest.approx(JAW_GAP * height, rel=0.01)


def test_expression_pushing_the_lips_through_each_other_is_clamped(renderer) -> None:
    metrics = renderer.model.metrics
    across = np.abs(metrics.landmark_x) / (0.5 * metrics.mouth_width)
    e = np.zeros((468, 2), np.float32)
    e[:, 1] = 0.1 * (metrics.upper_side - metrics.lower_side) * (1 - np.clip((across - 0.3) / 0.7, 0, 1)) ** 2
    for motion in (FaceMotion(expression=e), FaceMotion(jaw_open=0.5, expression=e),
                   FaceMotion(lip_press=1.0, expression=e)):
        assert _signed_gaps(renderer, motion).min() >= -1e-6
        f = _face(renderer.render(motion))
        ey = renderer.model.ey
        assert (f[14] - f[13]) @ ey / np.linalg.norm(f[10] - f[152]) >= -0.01


def test_expression_x_offsets_scale_with_the_mouth_width(renderer) -> None:
    from avatar.face.motion_types import CANONICAL_MOUTH_WIDTH
    from avatar.face.retarget import retarget_expression

    metrics = renderer.model.metrics
    e = np.zeros((468, 2), np.float32)
    e[[61, 291], 0] = [-0.02, 0.02]
    e[[61, 291], 1] = 0.01

    def corner(width: float) -> np.ndarray:
        scaled = dataclasses.replace(metrics, mouth_width=width * metrics.face_height)
        offsets = retarget_expression(e, scaled) / metrics.face_height
        return np.array([offsets[291] @ metrics.ex, offsets[291] @ metrics.ey])

    canonical, wide, narrow = corner(CANONICAL_MOUTH_WIDTH), corner(0.34), corner(0.24)
    assert canonical == pytest.approx([0.02, 0.01], abs=1e-6)
    assert wide[0] / canonical[0] == pytest.approx(0.34 / CANONICAL_MOUTH_WIDTH, rel=1e-5)
    assert narrow[0] / canonical[0] == pytest.approx(0.24 / CANONICAL_MOUTH_WIDTH, rel=1e-5)
    # y is not scaled by the width
    assert wide[1] == pytest.approx(0.01, abs=1e-6) and narrow[1] == pytest.approx(0.01, abs=1e-6)
    assert corner(5.0)[0] == pytest.approx(1.4 * 0.02) and corner(0.01)[0] == pytest.approx(0.7 * 0.02)


def test_spread_expression_widens_the_rendered_mouth(renderer) -> None:
    metrics, height = renderer.model.metrics, renderer.rig.face_height
    lm = renderer.rig.landmarks[:468]
    v = (lm - (lm[61] + lm[291]) / 2) @ renderer.model.ey / height
    e = np.zeros((468, 2), np.float32)
    across = np.clip(metrics.landmark_x / (0.5 * metrics.mouth_width), -1, 1)  # -1 .. 1 corner to corner
    e[:, 0] = 0.05 * across * np.exp(-0.5 * (v / 0.1) ** 2)  # corners 0.05 face heights outward
    rest = _mouth_width(renderer.render(FaceMotion()))
    assert _mouth_width(renderer.render(FaceMotion(expression=e))) - rest > 0.05


def test_expression_moves_brows_not_eyelids_and_the_neck_follows_the_chin(renderer) -> None:
    from avatar.face.mesh import BROWS, EYE_LOWER, EYE_UPPER, FACE_OVAL

    model = renderer.model
    lids = [i for part in EYE_UPPER + EYE_LOWER for i in part]
    brows = [i for part in BROWS for i in part]
    e = np.zeros((468, 2), np.float32)
    e[lids, 1] = 0.05  # a blink is the blink scalar's job: ignored
    e[brows, 1] = -0.03
    e[152, 1] = 0.06
    disp = model.displacements(clamp_motion(FaceMotion(expression=e)))
    assert np.abs(disp[lids]).max() == 0.0
    assert (disp[brows] @ model.ey).mean() == pytest.approx(-0.03 * renderer.rig.face_height, rel=0.05)
    chin = disp[152] @ model.ey
    rings = [468 + r * len(FACE_OVAL) + FACE_OVAL.index(152) for r in range(6)]
    follow = disp[rings] @ model.ey / chin  # rings 1.12, 1.3, 1.6, 2.0, 2.6, frame
    assert 0.8 < follow[0] <= 1.0 and follow[0] > follow[1] > follow[2] >= 0.0
    assert np.all(follow[3:] == 0.0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e9])
def test_non_finite_and_huge_expressions_are_harmless(renderer, value: float) -> None:
    from avatar.face.retarget import EXPRESSION_LIMIT

    e = np.full((468, 2), value, np.float32)
    before = e.copy()
    clamped = clamp_motion(FaceMotion(jaw_open=0.2, expression=e))
    assert clamped.expression.dtype == np.float32 and np.isfinite(clamped.expression).all()
    assert np.linalg.norm(clamped.expression, axis=1).max() <= EXPRESSION_LIMIT + 1e-6
    assert np.array_equal(e, before, equal_nan=True)  # the caller's array is left alone
    frame = renderer.render(FaceMotion(expression=e))
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    if not math.isfinite(value):
        assert np.array_equal(frame, renderer.render(FaceMotion()))
    assert face_mesh(frame)


def test_close_rest_closes_an_open_portrait_mouth_and_leaves_the_rest_layer_open(renderer) -> None:
    """The astronaut smiles with her teeth showing: learned motion (offsets from a closed mouth) closes
    her lips with ``close_rest`` = 1; the rules' default 0 keeps the portrait's own opening."""
    from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER

    model = renderer.model
    open_gap = _lip_gap(renderer.rig.image)
    assert open_gap > 0.02
    closed = renderer.render(FaceMotion(close_rest=1.0))
    assert _lip_gap(closed) < 0.35 * open_gap
    assert _lip_gap(renderer.render(FaceMotion(close_rest=0.0, head_roll=0.001))) > 0.8 * open_gap
    disp = model.displacements(clamp_motion(FaceMotion(close_rest=1.0)))
    moved = renderer.rig.mesh.vertices + disp
    centre = (moved[LIPS_INNER_LOWER[5]] - moved[LIPS_INNER_UPPER[5]]) @ model.ey
    assert abs(centre) < 0.1 * model.rest_gaps[5]
    # an open jaw still opens from the closed mouth
    assert _lip_gap(renderer.render(FaceMotion(close_rest=1.0, jaw_open=0.6))) > 1.5 * _lip_gap(closed)


def test_expression_of_the_wrong_shape_is_rejected(renderer) -> None:
    with pytest.raises(ValueError, match="468, 2"):
        renderer.render(FaceMotion(expression=np.zeros((478, 2), np.float32)))
