"""The renderer's fast paths against plain references: the four-channel relative-map warp against
``cv2.remap`` with float x/y maps, the batched row-span rasteriser against per-node barycentric tests,
the sparse forward field and the one-map inversion against their direct forms, the painted interior
against its colour blends done one after another."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.face import renderer as renderer_module
from avatar.face.mesh import WarpGrid, exact_offsets_at
from avatar.face.motion_types import FaceMotion
from avatar.face.portrait import prepare_portrait
from avatar.face.renderer import PortraitRenderer, _padded, _warp

ASTRONAUT_PATH = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"
MOTIONS = (
    FaceMotion(jaw_open=0.6, lip_width=0.3, blink=0.3, head_yaw=0.08, head_pitch=-0.05, breath=0.5),
    FaceMotion(jaw_open=0.2, lip_press=0.4, lip_width=-0.5, brow_raise=0.6, head_roll=0.1, breath=-0.7),
)
"""Talking, turning, breathing; lids below 0.5 so no lid is sealed over the warp."""


@pytest.fixture(scope="module")
def renderer() -> PortraitRenderer:
    return PortraitRenderer(prepare_portrait(ASTRONAUT_PATH))


def _reference_remap(image: np.ndarray, offsets: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """RGB ``image`` sampled the plain way: float32 x and y maps (pixel + offset), bilinear, edges
    replicated."""
    h, w = offsets.shape[:2]
    ys, xs = np.mgrid[origin[1]:origin[1] + h, origin[0]:origin[0] + w].astype(np.float32)
    return cv2.remap(image, xs + offsets[:, :, 0], ys + offsets[:, :, 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _smooth_offsets(shape: tuple[int, int], seed: int, scale: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = (rng.standard_normal((shape[0] // 8 + 2, shape[1] // 8 + 2, 2)) * scale).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def test_warp_matches_plain_float_remap(renderer) -> None:
    image = renderer.rig.image
    rgba = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    for origin, shape in (((0, 0), image.shape[:2]), ((0, 0), (300, 420)), ((37, 81), (200, 150))):
        offsets = _smooth_offsets(shape, seed=origin[0])
        expected = _reference_remap(image, offsets, origin)
        warped = _warp(rgba, offsets.copy(), origin)
        assert warped.shape == (*shape, 4)
        diff = np.abs(warped[:, :, :3].astype(int) - expected)
        assert diff.max() <= 1 and diff.mean() < 0.01, (origin, diff.max(), diff.mean())


def test_rendered_frame_is_the_plain_remap_of_its_offsets(renderer, monkeypatch) -> None:
    """A frame without the mouth painted is exactly the portrait remapped by the renderer's offsets."""
    seen: list[tuple[np.ndarray, tuple[int, int]]] = []

    def spy(image_rgba: np.ndarray, offsets: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        seen.append((offsets.copy(), origin))
        return _warp(image_rgba, offsets, origin)

    monkeypatch.setattr(renderer_module, "_warp", spy)
    # the whole frame moves (head, breath), or only a box inside it (a blink, the jaw)
    for motion in (*MOTIONS, FaceMotion(blink=0.4), FaceMotion(jaw_open=0.5)):
        seen.clear()
        frame = renderer.render(motion, paint_mouth=False)
        (offsets, origin), = seen
        h, w = offsets.shape[:2]
        assert np.abs(offsets).max() > 1.0  # the frame really moved
        expected = renderer.rig.image.copy()
        expected[origin[1]:origin[1] + h, origin[0]:origin[0] + w] = _reference_remap(renderer.rig.image,
                                                                                     offsets, origin)
        diff = np.abs(frame.astype(int) - expected)
        assert diff.max() <= 1 and diff.mean() < 0.01


def test_render_hands_out_a_new_picture_each_time(renderer) -> None:
    first = renderer.render(MOTIONS[0])
    kept = first.copy()
    second = renderer.render(MOTIONS[1])
    assert second is not first and not np.shares_memory(first, second)
    assert np.array_equal(first, kept) and not np.array_equal(first, second)


def _mesh(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A jittered 6 x 6 vertex grid over [0, 50]^2 (two triangles per cell), rest and moved (V, 2)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:6, 0:6] * 10.0
    rest = np.column_stack([xs.ravel(), ys.ravel()])
    moved = rest.copy()
    inner = (rest[:, 0] > 0) & (rest[:, 0] < 50) & (rest[:, 1] > 0) & (rest[:, 1] < 50)
    moved[inner] += rng.uniform(-3.0, 3.0, (int(inner.sum()), 2))
    corners = [(r * 6 + c, r * 6 + c + 1, (r + 1) * 6 + c, (r + 1) * 6 + c + 1)
               for r in range(5) for c in range(5)]
    tris = np.array([t for a, b, c, d in corners for t in ((a, b, d), (a, d, c))])
    return rest, moved, tris


def _brute_force_offsets(grid: WarpGrid, rest: np.ndarray, moved: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per node: the rest position minus the node, through the moved triangle that holds it (NaN where
    none), and which nodes a triangle holds."""
    nodes = grid.node_xy()
    expected = np.full((len(nodes), 2), np.nan)
    for r, m in zip(rest, moved, strict=True):
        w1, w2 = np.linalg.solve(np.column_stack([m[1] - m[0], m[2] - m[0]]), (nodes - m[0]).T)
        inside = np.minimum(np.minimum(w1, w2), 1.0 - w1 - w2) > 1e-6
        at_rest = r[0] + np.outer(w1, r[1] - r[0]) + np.outer(w2, r[2] - r[0])
        expected[inside] = at_rest[inside] - nodes[inside]
    return expected.reshape(*grid.shape, 2), ~np.isnan(expected[:, 0]).reshape(grid.shape)


def test_batched_exact_offsets_match_per_node_barycentrics() -> None:
    grids = [WarpGrid.covering(0, 0, 50, 50, 2), WarpGrid.covering(12, 7, 41, 33, 1),
             WarpGrid.covering(-3, 5, 30, 52, 4)]
    meshes = [_mesh(seed) for seed in range(len(grids))]
    rest = [r[t] for r, _, t in meshes]
    moved = [m[t] for _, m, t in meshes]
    batched = exact_offsets_at(grids, rest, moved)
    for grid, values, r, m in zip(grids, batched, rest, moved, strict=True):
        out = np.full((*grid.shape, 2), 99.0, np.float32)
        values.write(out)
        expected, covered = _brute_force_offsets(grid, r, m)
        assert covered.sum() > 0.5 * covered.size
        assert np.allclose(out[covered], expected[covered], atol=1e-4)
        single = grid.exact_offsets(r, m, np.arange(len(r)), out=np.full((*grid.shape, 2), 99.0, np.float32))
        assert np.array_equal(single, out)  # one grid alone gives the same as in the batch
    # a node outside every triangle keeps what it had
    grid = grids[2]
    out = np.full((*grid.shape, 2), 99.0, np.float32)
    batched[2].write(out)
    assert (out[..., 0] == 99.0).any()


def test_rasterize_covers_each_node_once_with_its_barycentrics() -> None:
    rest, _, tris = _mesh(0)
    grid = WarpGrid.covering(0, 0, 50, 50, 2)
    owner, nodes, weights = grid.rasterize(rest[tris])
    assert np.allclose(weights.sum(axis=1), 1.0) and (weights > -1e-6).all()
    xy = grid.node_xy()[nodes]
    corners = rest[tris][owner]
    assert np.allclose(np.einsum("nk,nkd->nd", weights, corners), xy, atol=1e-9)
    assert set(nodes.tolist()) == set(range(grid.shape[0] * grid.shape[1]))


def test_sparse_forward_field_and_inversion_match_their_direct_forms(renderer) -> None:
    sampler = renderer.rig.sampler
    disp = renderer.model.displacements(MOTIONS[0])
    rows, cols = sampler.grid.shape
    d = disp.astype(np.float32)
    direct = np.zeros((rows * cols, 2), np.float32)
    direct[sampler.active, 0] = (d[:, 0][sampler.vertex_t] * sampler.weight_t).sum(axis=0)
    direct[sampler.active, 1] = (d[:, 1][sampler.vertex_t] * sampler.weight_t).sum(axis=0)
    field = sampler.forward_field(disp)
    assert np.abs(field - direct.reshape(rows, cols, 2)).max() < 1e-4
    assert np.abs(field).max() > 1.0

    step = float(sampler.grid.step)
    gy, gx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    offsets = -field
    for _ in range(4):  # the inversion as first written: separate x and y maps, negated after
        offsets = -cv2.remap(field, gx + offsets[:, :, 0] / step, gy + offsets[:, :, 1] / step,
                             cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inverted = sampler.invert(field, slice(0, rows), slice(0, cols), iterations=4)
    assert np.abs(inverted - offsets).max() < 1e-5


def _interior_one_blend_at_a_time(painter, upper, lower, shape, upper_teeth=True) -> np.ndarray:
    """``MouthPainter._interior`` as first written: each layer blended into an RGB image in turn."""
    pal = painter.palette
    left, right = (upper[0] + lower[0]) / 2, (upper[-1] + lower[-1]) / 2
    axis = right - left
    half = max(float(np.linalg.norm(axis)) / 2, 1.0)
    ex = axis / (2 * half)
    ey = np.array([-ex[1], ex[0]], dtype=np.float32)
    center = (left + right) / 2
    xs = np.arange(shape[1], dtype=np.float32)[None, :] - center[0]
    ys = np.arange(shape[0], dtype=np.float32)[:, None] - center[1]
    u = (xs * ex[0] + ys * ex[1]) / half
    v = xs * ey[0] + ys * ey[1]
    basis = np.stack([ex, ey], 1)
    cu, cl = (upper - center) @ basis, (lower - center) @ basis
    ou, ol = np.argsort(cu[:, 0], kind="stable"), np.argsort(cl[:, 0], kind="stable")
    v_up = np.interp(u, cu[ou, 0] / half, cu[ou, 1])
    v_low = np.interp(u, cl[ol, 0] / half, cl[ol, 1])
    gap = np.maximum(v_low - v_up, 1e-3)
    t = np.clip((v - v_up) / gap, 0.0, 1.0)
    au, depth, width = np.abs(u), v - v_up, 2 * half
    color = pal.cavity[None, None, :] * (0.7 + 0.6 * t)[:, :, None]
    span = np.clip(1.0 - (u / 0.7) ** 2, 0.0, 1.0)
    dome = 1.0 - 0.35 * np.sqrt(span)
    tongue = np.clip((t - dome) / 0.15, 0.0, 1.0) * np.clip(gap / (0.06 * painter.face_height) - 0.3, 0, 1)
    tongue_shade = (0.7 + 0.3 * span) * (1.0 + 0.15 * np.clip(1.0 - (t - dome) / 0.2, 0, 1))
    color += (pal.tongue[None, None, :] * tongue_shade[:, :, None] - color) * tongue[:, :, None]
    low_reach = 0.035 * width * np.sqrt(np.clip(1.0 - (u / 0.5) ** 2, 0, 1))
    low_teeth = np.clip((depth - (gap - low_reach)) / 0.8, 0, 1) * np.clip(gap / (0.1 * width) - 1, 0, 1)
    color += (pal.teeth[None, None, :] * 0.7 - color) * (0.6 * low_teeth)[:, :, None]
    arch = np.sqrt(np.clip(1.0 - (u / 0.82) ** 2, 0.0, 1.0))
    reach = np.minimum(0.11 * width * arch, 0.6 * gap)
    teeth = np.clip((reach - depth) / 0.8 + 0.5, 0.0, 1.0) * ((arch > 0) & upper_teeth)
    table_u = np.linspace(-1.0, 1.0, 401, dtype=np.float32)
    edges = np.array([0.0, -0.2, 0.2, -0.38, 0.38, -0.54, 0.54, -0.68, 0.68], dtype=np.float32)
    table = np.exp(-(((table_u[:, None] - edges) * half / 0.6) ** 2)).sum(axis=1)
    gaps = np.interp(u, table_u, np.clip(table, 0, 1))
    tooth_shade = (1.0 - 0.4 * au**2) * (1.0 - 0.1 * gaps)
    tooth_shade *= 0.82 + 0.18 * np.clip(depth / np.maximum(0.35 * reach, 1e-3), 0, 1)
    color += (pal.teeth[None, None, :] * tooth_shade[:, :, None] - color) * teeth[:, :, None]
    return color * (1.0 - 0.6 * au**4)[:, :, None]


def test_painted_interior_matches_the_blends_one_at_a_time(renderer) -> None:
    from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER

    painter = renderer.mouth
    for jaw_open, lip_width in ((1.0, 0.0), (0.5, 0.6), (0.25, -0.8)):
        motion = FaceMotion(jaw_open=jaw_open, lip_width=lip_width)
        moved = renderer._rest + renderer.model.displacements(motion)
        upper, lower = moved[list(LIPS_INNER_UPPER)], moved[list(LIPS_INNER_LOWER)]
        x0, y0, x1, y1 = painter.box(upper, lower, (512, 512))
        origin = np.array([x0, y0], dtype=np.float32)
        for teeth in (True, False):
            args = (upper - origin, lower - origin, (y1 - y0, x1 - x0), teeth)
            fast = painter._interior(*args)
            assert np.abs(fast - _interior_one_blend_at_a_time(painter, *args)).max() < 1e-3
            assert fast.shape == (y1 - y0, x1 - x0, 3) and fast.max() > 20


def test_padded_repeats_the_last_row_and_column_like_np_pad() -> None:
    values = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    for rows, cols in ((2, 3), (3, 3), (2, 5), (4, 4), (1, 2)):
        expected = np.pad(values, ((0, max(rows - 2, 0)), (0, max(cols - 3, 0)), (0, 0)), mode="edge")
        out = _padded(values, rows, cols)
        assert out.flags["C_CONTIGUOUS"] and np.array_equal(out, expected[:rows, :cols])
