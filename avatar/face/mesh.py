"""Triangle mesh over the whole portrait, and grids that invert its warp for ``cv2.remap``.

The mesh is built from MediaPipe's 478-point face mesh (pixel coordinates of the framed portrait):

* the face itself uses MediaPipe's own tessellation (852 triangles over landmarks 0..467), whose
  holes at the mouth and the eyes are closed by strips between the upper and lower contours, so the
  lips and eyelids can part and close without tearing;
* rings (scaled copies of the face oval about its centre) cover hair, neck and shoulders and an
  outer "frame" ring far outside the image closes the mesh, so every pixel lies in a triangle.

Warping is done backward on grids of nodes, then upsampled with ``cv2.resize`` for ``cv2.remap``:

* everywhere, on a coarse grid, the forward displacement is interpolated from the vertices with
  barycentric weights precomputed at rest and inverted by fixed-point iteration (fine for smooth
  motion: head turns, jaw line, hair falloff);
* around the eyes and the mouth, where lids and lips part or close, on a fine grid, the deformed
  triangle containing each node is found by vectorised rasterisation and its barycentric weights give
  the exact rest position; this inverse stays continuous where the forward warp tears open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import scipy.sparse

# --- MediaPipe face-mesh landmark indices (image-left eye is the subject's right eye) -------------
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
"""Closed face outline, clockwise in the image starting at the top of the forehead (10)."""
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
"""Lip contours from the image-left corner to the image-right corner (corners shared)."""
EYE_UPPER = ((33, 246, 161, 160, 159, 158, 157, 173, 133), (263, 466, 388, 387, 386, 385, 384, 398, 362))
EYE_LOWER = ((33, 7, 163, 144, 145, 153, 154, 155, 133), (263, 249, 390, 373, 374, 380, 381, 382, 362))
"""Eyelid margins per eye (image-left eye first), outer corner first, corners shared."""
BROWS = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46), (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))
"""Brow outlines per brow (image-left brow first): upper edge outwards-in, lower edge back."""
IRIS_CENTERS = (468, 473)
FOREHEAD_TOP, CHIN = 10, 152
NUM_FACE_POINTS = 468
"""Landmarks that belong to the tessellation (the 10 iris points are not mesh vertices)."""

REGIONS: dict[str, tuple[int, ...]] = {
    "face": FACE_OVAL,
    "lips": LIPS_OUTER_UPPER + LIPS_OUTER_LOWER[-2:0:-1],
    "mouth": LIPS_INNER_UPPER + LIPS_INNER_LOWER[-2:0:-1],
    "left_eye": EYE_UPPER[0] + EYE_LOWER[0][-2:0:-1],
    "right_eye": EYE_UPPER[1] + EYE_LOWER[1][-2:0:-1],
    "left_brow": BROWS[0],
    "right_brow": BROWS[1],
    "jaw": FACE_OVAL[FACE_OVAL.index(454):FACE_OVAL.index(234) + 1],
}
"""Landmark outlines of face regions (closed polygons, except the jaw polyline)."""

RING_SCALES = (1.12, 1.3, 1.6, 2.0, 2.6)
"""Rings of the face oval scaled about its centre: hairline, hair/neck, outer hair, background."""


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """MediaPipe's face tessellation as triangles, int32 (852, 3), derived from its edge list."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(edge)) for edge in FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    # A 3-cycle that is not a face shows up as a triangle whose three edges all border 3 triangles.
    uses: dict[tuple[int, int], int] = {}
    for t in triangles:
        for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])):
            uses[e] = uses.get(e, 0) + 1
    faces = [t for t in triangles
             if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]
    return np.array(sorted(faces), dtype=np.int32)


def strip_triangles(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles closing the hole between two contours that share their end points (corners)."""
    tris = [(upper[0], upper[1], lower[1])]
    for i in range(1, len(upper) - 2):
        tris.append((upper[i], upper[i + 1], lower[i]))
        tris.append((upper[i + 1], lower[i + 1], lower[i]))
    tris.append((upper[-2], upper[-1], lower[-2]))
    return tris


@dataclass
class RigMesh:
    """Rest-pose mesh of a framed portrait (all coordinates in output pixels)."""

    vertices: np.ndarray
    """float32 (V, 2) rest positions: 468 face landmarks, then ring points (36 per ring), then frame."""
    depth: np.ndarray
    """float32 (V,) depth in pixels (MediaPipe z: smaller is nearer the camera)."""
    triangles: np.ndarray
    """int32 (T, 3) vertex indices."""
    ring_level: np.ndarray
    """float32 (V,) 0 for face landmarks, the ring's scale for ring points (frame ring: its scale)."""
    inner_triangles: int
    """The first ``inner_triangles`` triangles cover the face and the first ring (small triangles)."""
    center: np.ndarray
    """float32 (2,) centre of the face oval that the rings are scaled about."""


def build_mesh(landmarks: np.ndarray, size: int) -> RigMesh:
    """Mesh for ``landmarks`` (478, 3) pixel x, y and depth z in a ``size`` x ``size`` image."""
    pts = landmarks[:NUM_FACE_POINTS, :2].astype(np.float64)
    oval = pts[list(FACE_OVAL)]
    center = oval.mean(axis=0)
    offsets = oval - center
    # Frame ring: scaled until the polygon surely contains the whole image (rings are star-shaped).
    inner_radius = max(float(np.min(np.linalg.norm(offsets, axis=1))), 1.0)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    far = float(np.max(np.linalg.norm(corners - center, axis=1)))
    frame_scale = max(RING_SCALES[-1] * 1.5, 2.0 * far / inner_radius)
    scales = (*RING_SCALES, frame_scale)

    oval_depth = landmarks[list(FACE_OVAL), 2].astype(np.float64)
    back = float(np.median(oval_depth))
    ring_pts, ring_depth, ring_level = [], [], []
    for scale in scales:
        ring_pts.append(center + scale * offsets)
        blend = min(1.0, (scale - 1.0) / (RING_SCALES[-1] - 1.0))
        ring_depth.append(oval_depth + blend * (back - oval_depth))
        ring_level.append(np.full(len(FACE_OVAL), scale))

    vertices = np.vstack([pts, *ring_pts]).astype(np.float32)
    depth = np.concatenate([landmarks[:NUM_FACE_POINTS, 2], *ring_depth]).astype(np.float32)
    level = np.concatenate([np.zeros(NUM_FACE_POINTS), *ring_level]).astype(np.float32)

    tris = [face_triangles()]
    holes = [strip_triangles(LIPS_INNER_UPPER, LIPS_INNER_LOWER)]
    holes += [strip_triangles(up, low) for up, low in zip(EYE_UPPER, EYE_LOWER, strict=True)]
    tris += [np.array(h, dtype=np.int32) for h in holes]
    inner = sum(len(t) for t in tris) + 2 * len(FACE_OVAL)
    n = len(FACE_OVAL)
    inner_ring = np.array(FACE_OVAL, dtype=np.int32)
    for r in range(len(scales)):
        outer_ring = NUM_FACE_POINTS + r * n + np.arange(n, dtype=np.int32)
        nxt = np.roll(np.arange(n), -1)
        tris.append(np.stack([inner_ring, inner_ring[nxt], outer_ring], axis=1))
        tris.append(np.stack([inner_ring[nxt], outer_ring[nxt], outer_ring], axis=1))
        inner_ring = outer_ring
    return RigMesh(vertices, depth, np.vstack(tris).astype(np.int32), level, inner, center.astype(np.float32))


def corner_bounds(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-triangle bounding boxes (min (k, 2), max (k, 2)) of corners (k, 3, 2).

    (Element-wise minimum of the three corners is much faster in NumPy than ``min(axis=1)``.)
    """
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    return np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)


@dataclass(frozen=True)
class WarpGrid:
    """Nodes every ``step`` pixels from ``origin``; node (i, j) sits at pixel
    (x0 + j*step + (step-1)/2, y0 + i*step + (step-1)/2), which is where ``cv2.resize`` by ``step``
    puts source pixel centres, so offsets on the grid upsample to ``shape * step`` pixels exactly."""

    origin: tuple[int, int]
    step: int
    shape: tuple[int, int]
    """rows, cols."""

    @classmethod
    def covering(cls, x0: int, y0: int, x1: int, y1: int, step: int) -> WarpGrid:
        """Grid over the pixel box [x0, x1) x [y0, y1) (extended to a whole number of steps)."""
        return cls((x0, y0), step, (max(1, -(-(y1 - y0) // step)), max(1, -(-(x1 - x0) // step))))

    @property
    def pixel_shape(self) -> tuple[int, int]:
        return self.shape[0] * self.step, self.shape[1] * self.step

    def node_xy(self) -> np.ndarray:
        """Pixel coordinates of all nodes, float64 (rows*cols, 2), row-major."""
        rows, cols = self.shape
        ys, xs = np.mgrid[0:rows, 0:cols]
        half = (self.step - 1) / 2.0
        return np.stack([xs.ravel() * self.step + self.origin[0] + half,
                         ys.ravel() * self.step + self.origin[1] + half], axis=1).astype(np.float64)

    def to_grid(self, xy: np.ndarray) -> np.ndarray:
        """Pixel coordinates to fractional (column, row) grid coordinates."""
        return (xy - np.asarray(self.origin) + 0.5) / self.step - 0.5

    def rasterize(self, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nodes inside triangles with ``corners`` (k, 3, 2) in pixels.

        Returns (triangle position in ``corners`` per hit, flat node index per hit, barycentric
        weights (hits, 3)). A node on a shared edge may be reported by both triangles.
        """
        cols = self.shape[1]
        spans = _row_spans(self.to_grid(corners.astype(np.float64)), np.array([cols - 1, self.shape[0] - 1]))
        owner = spans.pair_triangle[spans.hit_pair]
        gx, gy = spans.hit_columns(), spans.row[spans.hit_pair]
        c = np.take(spans.coef, owner, axis=0)
        w1 = c[:, 0] * gx + c[:, 1] * gy + c[:, 2]
        w2 = c[:, 3] * gx + c[:, 4] * gy + c[:, 5]
        weights = np.stack([1.0 - w1 - w2, w1, w2], axis=1)
        return owner, (gy * cols + gx).astype(np.int64), weights

    def overlaps(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Which boxes (min corner ``lo``, max corner ``hi``, (k, 2) pixels) touch the grid's area."""
        x0, y0 = self.origin
        x1, y1 = x0 + self.shape[1] * self.step, y0 + self.shape[0] * self.step
        return (hi[:, 0] >= x0) & (lo[:, 0] < x1) & (hi[:, 1] >= y0) & (lo[:, 1] < y1)

    def exact_offsets(self, rest: np.ndarray, moved: np.ndarray, which: np.ndarray,
                      out: np.ndarray | None = None) -> np.ndarray:
        """Exact backward offsets (rest position - node position), float32 (rows, cols, 2), pixels.

        ``rest``/``moved`` are triangle corners (T, 3, 2) in pixels at rest and deformed; ``which``
        lists the triangles to rasterise (those that moved). Nodes inside none of them keep their
        value in ``out`` (zeros when not given: in a fold-free warp a still triangle is covered by no
        other triangle). ``exact_offsets_at`` does this for several grids at once.
        """
        if out is None:
            out = np.zeros((*self.shape, 2), dtype=np.float32)
        if len(which):
            exact_offsets_at([self], [rest[which]], [moved[which]])[0].write(out)
        return out


@dataclass(frozen=True)
class NodeValues:
    """Offsets (pixels) at some nodes of a grid: flat node indices (n,) and x, y values (n,) float64.
    A node may be listed more than once (on an edge shared by two triangles); the last one counts."""

    nodes: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def write(self, out: np.ndarray) -> None:
        """Set these nodes of ``out`` (rows, cols, 2) float32 (C-contiguous) in place."""
        flat = out.reshape(-1, 2)
        flat[self.nodes, 0] = self.x
        flat[self.nodes, 1] = self.y


@dataclass(frozen=True)
class _RowSpans:
    """Grid nodes inside triangles, found row by row: for each (triangle, node row) pair the columns
    where all three barycentric weights are >= -1e-7 (solved, not tested node by node)."""

    coef: np.ndarray
    """(k, 6) per triangle: w1 = c0*col + c1*row + c2, w2 = c3*col + c4*row + c5 in grid units."""
    pair_triangle: np.ndarray
    """(m,) the triangle of each pair."""
    row: np.ndarray
    """(m,) float64 the node row of each pair."""
    first_column: np.ndarray
    """(m,) float64 the pair's first inside column."""
    count: np.ndarray
    """(m,) inside nodes of each pair."""
    hit_pair: np.ndarray
    """(n,) the pair of each inside node, pairs in order."""

    def hit_columns(self) -> np.ndarray:
        """Column (float64) of each inside node."""
        first = np.repeat(np.cumsum(self.count) - self.count, self.count)
        return self.first_column[self.hit_pair] + (np.arange(len(self.hit_pair)) - first)


_INSIDE = 1e-7
"""Barycentric tolerance: a node this close outside a triangle's edge counts as inside."""


def _row_spans(q: np.ndarray, last: np.ndarray) -> _RowSpans:
    """Nodes inside triangles with corners ``q`` (k, 3, 2) in grid units (column, row), on grids
    whose last node is ``last`` ((2,) or per triangle (k, 2): column, row). Degenerate triangles
    get no nodes."""
    lo, hi = corner_bounds(q)
    lo = np.maximum(np.ceil(lo - 1e-6), 0.0)
    hi = np.minimum(np.floor(hi + 1e-6), last)
    q0 = q[:, 0]
    e1, e2 = q[:, 1] - q0, q[:, 2] - q0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    usable = (hi[:, 0] >= lo[:, 0]) & (hi[:, 1] >= lo[:, 1]) & (np.abs(det) > 1e-9)
    inv = 1.0 / np.where(usable, det, 1.0)
    a1, b1 = e2[:, 1] * inv, -e2[:, 0] * inv
    a2, b2 = -e1[:, 1] * inv, e1[:, 0] * inv
    coef = np.stack([a1, b1, -(a1 * q0[:, 0] + b1 * q0[:, 1]),
                     a2, b2, -(a2 * q0[:, 0] + b2 * q0[:, 1])], axis=1)
    rows = np.where(usable, hi[:, 1] - lo[:, 1] + 1, 0.0).astype(np.intp)
    pair_triangle = np.repeat(np.arange(len(q)), rows)
    # per pair: triangle coefficients, its box's columns and first row (np.take: fast on rows)
    p = np.take(np.concatenate([coef, lo, hi[:, :1]], axis=1), pair_triangle, axis=0)
    row = p[:, 7] + (np.arange(len(p)) - np.repeat(np.cumsum(rows) - rows, rows))
    # Along a row each weight is affine in the column: w_i = slope_i * col + at0_i >= -_INSIDE.
    slope = np.stack([p[:, 0], p[:, 3], -(p[:, 0] + p[:, 3])])
    at0 = np.empty_like(slope)
    np.multiply(p[:, 1], row, out=at0[0])
    at0[0] += p[:, 2]
    np.multiply(p[:, 4], row, out=at0[1])
    at0[1] += p[:, 5]
    np.subtract(1.0, at0[0], out=at0[2])
    at0[2] -= at0[1]
    flat = slope == 0.0
    bound = (-_INSIDE - at0) / np.where(flat, 1.0, slope)  # the column where w_i crosses -_INSIDE
    first = np.maximum(np.ceil(np.max(np.where(slope > 0, bound, -np.inf), axis=0)), p[:, 6])
    last_column = np.minimum(np.floor(np.min(np.where(slope < 0, bound, np.inf), axis=0)), p[:, 8])
    count = last_column - first + 1
    count[(flat & (at0 < -_INSIDE)).any(axis=0) | ~(count > 0)] = 0
    count = count.astype(np.intp)
    return _RowSpans(coef, pair_triangle, row, first, count, np.repeat(np.arange(len(p)), count))


def exact_offsets_at(grids: Sequence[WarpGrid], rest: Sequence[np.ndarray], moved: Sequence[np.ndarray]
                     ) -> list[NodeValues]:
    """Exact backward offsets (rest position - node position, pixels) at the nodes of each grid that
    its triangles cover, for several grids in one vectorised pass.

    ``rest[g]``/``moved[g]``: corners (k_g, 3, 2) in pixels, at rest and deformed, of the triangles to
    rasterise on ``grids[g]``. Inside a deformed triangle the backward map is affine, so each node's
    rest position comes from that triangle's barycentric weights.
    """
    sizes = [len(r) for r in rest]
    if sum(sizes) == 0:
        empty = np.zeros(0)
        return [NodeValues(empty.astype(np.intp), empty, empty) for _ in grids]
    per_grid = np.array([[*g.origin, g.step, g.shape[1] - 1, g.shape[0] - 1] for g in grids], np.float64)
    per = np.repeat(per_grid, sizes, axis=0)  # per triangle: origin x, y, step, last column, last row
    origin, step = per[:, :2], per[:, 2]
    rest_corners = np.concatenate(rest).astype(np.float64, copy=False)
    q = (np.concatenate(moved) - origin[:, None] + 0.5) / step[:, None, None] - 0.5
    spans = _row_spans(q, per[:, 3:])
    # The offset is affine in the node's grid position inside each triangle: fold the barycentric
    # weights, the rest corners and the node's own pixel position into per-pair slopes along the row.
    c = spans.coef
    p0 = rest_corners[:, 0]
    d1, d2 = rest_corners[:, 1] - p0, rest_corners[:, 2] - p0
    half = (step - 1) / 2.0
    along_col = [c[:, 0] * d1[:, 0] + c[:, 3] * d2[:, 0] - step, c[:, 0] * d1[:, 1] + c[:, 3] * d2[:, 1]]
    along_row = [c[:, 1] * d1[:, 0] + c[:, 4] * d2[:, 0], c[:, 1] * d1[:, 1] + c[:, 4] * d2[:, 1] - step]
    const = [p0[:, axis] + c[:, 2] * d1[:, axis] + c[:, 5] * d2[:, axis] - origin[:, axis] - half
             for axis in (0, 1)]
    columns = per[:, 3] + 1
    t = np.take(np.stack([*along_col, *along_row, *const, columns], axis=1), spans.pair_triangle, axis=0)
    row = spans.row
    pair = np.stack([t[:, 0], t[:, 2] * row + t[:, 4], t[:, 1], t[:, 3] * row + t[:, 5],
                     spans.first_column, row * t[:, 6]], axis=1)
    h = np.take(pair, spans.hit_pair, axis=0)  # per inside node
    ends = np.cumsum(spans.count)
    col = h[:, 4] + (np.arange(len(h)) - np.repeat(ends - spans.count, spans.count))
    x = h[:, 0] * col
    x += h[:, 1]
    y = h[:, 2] * col
    y += h[:, 3]
    nodes = (h[:, 5] + col).astype(np.intp)
    # triangles, pairs and inside nodes are in grid order: cut them where each grid's triangles end
    pair_cuts = np.searchsorted(spans.pair_triangle, np.cumsum(sizes)[:-1])
    cuts = np.concatenate([[0], ends])[pair_cuts]
    return [NodeValues(*parts) for parts in zip(np.split(nodes, cuts), np.split(x, cuts), np.split(y, cuts),
                                                strict=True)]


class RestSampler:
    """Forward displacement field on a grid from vertex displacements, via rest-pose barycentrics.

    Each node's rest triangle and barycentric weights are found once; per frame the field is a
    weighted sum of three vertex displacements per node (only at nodes whose triangle can move).
    ``invert`` turns the forward field into backward offsets by fixed-point iteration (exact for
    smooth fields whose gradient stays below 1).
    """

    def __init__(self, grid: WarpGrid, mesh: RigMesh, still: np.ndarray | None = None) -> None:
        """``still`` (V,) bool marks vertices that never move; nodes surrounded by them are skipped."""
        self.grid = grid
        rows, cols = grid.shape
        tri_ids, nodes, weights = grid.rasterize(mesh.vertices[mesh.triangles])
        self.node_triangle = np.full(rows * cols, -1, dtype=np.int32)
        self.node_triangle[nodes] = tri_ids
        if still is not None:
            keep = ~still[mesh.triangles[tri_ids]].all(axis=1)
            tri_ids, nodes, weights = tri_ids[keep], nodes[keep], weights[keep]
        self.active = nodes
        self.vertex_t = np.ascontiguousarray(mesh.triangles[tri_ids].T)  # (3, n)
        self.weight_t = np.ascontiguousarray(weights.T.astype(np.float32))  # (3, n)
        # The same weights as a sparse (nodes, V) matrix; a node on an edge shared by two triangles
        # keeps its last one (as rasterised).
        last = len(nodes) - 1 - np.unique(nodes[::-1], return_index=True)[1]
        self._weights = scipy.sparse.csr_array(
            (self.weight_t[:, last].T.ravel(), (np.repeat(nodes[last], 3), self.vertex_t[:, last].T.ravel())),
            shape=(rows * cols, len(mesh.vertices)), dtype=np.float32)
        node = grid.to_grid(grid.node_xy()).astype(np.float32)
        self._node_gxy = node.reshape(rows, cols, 2)

    def forward_field(self, displacement: np.ndarray) -> np.ndarray:
        """Forward displacement at every node, float32 (rows, cols, 2), from (V, 2) pixels."""
        rows, cols = self.grid.shape
        return (self._weights @ displacement.astype(np.float32)).reshape(rows, cols, 2)

    def invert(self, field: np.ndarray, rows: slice, cols: slice, iterations: int = 5) -> np.ndarray:
        """Backward offsets in pixels solving y = x - field(y) at the nodes x in ``[rows, cols]``."""
        step = float(self.grid.step)
        node = self._node_gxy[rows, cols]
        backward = -field
        offsets = backward[rows, cols]
        position = np.empty(offsets.shape, dtype=np.float32)  # where each node samples, grid units
        for _ in range(iterations):
            np.divide(offsets, step, out=position)
            position += node
            offsets = cv2.remap(backward, position, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return offsets
