"""Triangulated irregular networks: build once, interpolate millions of points.

scipy's Qhull Delaunay costs ~7 µs per vertex; Shewchuk's Triangle (the
``triangle`` package) builds the same Delaunay triangulation ~7x faster, and
is used when installed.  Neither gives a fast way to locate many query points
in *its* triangles (Qhull's walk needs spatially sorted queries; Triangle has
none), so point location is written here: a vectorised visibility walk from a
start triangle picked on a coarse bucket grid, which ends in one or two steps
for almost every query.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

try:  # optional accelerator
    import triangle as _triangle
except ImportError:  # pragma: no cover - scipy fallback
    _triangle = None


def triangulate(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Delaunay triangles (n, 3) and their neighbours (n, 3; neighbour k is opposite vertex k; -1 none)."""
    xy = np.column_stack((x, y))
    if len(xy) < 3:
        return np.empty((0, 3), np.int64), np.empty((0, 3), np.int64)
    if _triangle is not None:
        out = _triangle.triangulate({"vertices": xy}, "Qzn")
        tris = out.get("triangles")
        if tris is None:
            return np.empty((0, 3), np.int64), np.empty((0, 3), np.int64)
        return tris.astype(np.int64), out["neighbors"].astype(np.int64)
    from scipy.spatial import Delaunay, QhullError

    try:
        d = Delaunay(xy, qhull_options="Qbb Qc Qz Q12")
    except QhullError:  # collinear / too few distinct points
        return np.empty((0, 3), np.int64), np.empty((0, 3), np.int64)
    return d.simplices.astype(np.int64), d.neighbors.astype(np.int64)


class TIN:
    """A Delaunay TIN of (x, y, z) points with fast linear interpolation.

    Coordinates are shifted to a local origin so float64 keeps millimetre
    precision at UTM magnitudes.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.ox = float(np.min(x)) if len(x) else 0.0
        self.oy = float(np.min(y)) if len(y) else 0.0
        self.x = np.asarray(x, np.float64) - self.ox
        self.y = np.asarray(y, np.float64) - self.oy
        self.z = np.asarray(z, np.float64)
        self.triangles, self.neighbors = triangulate(self.x, self.y)
        self._transforms()
        self._buckets()

    def _transforms(self) -> None:
        """Per-triangle affine map to barycentric coordinates (as Qhull's ``transform``)."""
        t = self.triangles
        if not len(t):
            self.T = np.empty((0, 6))
            return
        x0, x1, x2 = self.x[t[:, 0]], self.x[t[:, 1]], self.x[t[:, 2]]
        y0, y1, y2 = self.y[t[:, 0]], self.y[t[:, 1]], self.y[t[:, 2]]
        det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.T = np.column_stack(((y1 - y2) / det, (x2 - x1) / det, (y2 - y0) / det, (x0 - x2) / det, x2, y2))

    def __len__(self) -> int:
        return len(self.triangles)

    def _buckets(self) -> None:
        nt = len(self.triangles)
        if nt == 0:
            return
        t = self.triangles
        cx = self.x[t].mean(axis=1)
        cy = self.y[t].mean(axis=1)
        w = max(float(self.x.max()), 1e-9)
        h = max(float(self.y.max()), 1e-9)
        cs = max(np.sqrt(w * h / nt) * 1.5, 1e-6)
        self.bcs = cs
        self.bnx = int(w // cs) + 1
        self.bny = int(h // cs) + 1
        bx = np.minimum((cx // cs).astype(np.int64), self.bnx - 1)
        by = np.minimum((cy // cs).astype(np.int64), self.bny - 1)
        start = np.full((self.bny, self.bnx), -1, np.int64)
        start[by, bx] = np.arange(nt)
        empty = start < 0
        if empty.any():
            _, (iy, ix) = ndimage.distance_transform_edt(empty, return_indices=True)
            start = start[iy, ix]
        self.start = start

    def edge_lengths(self) -> np.ndarray:
        """Longest edge of each triangle (metres)."""
        t = self.triangles
        px, py = self.x[t], self.y[t]
        e = [np.hypot(px[:, i] - px[:, (i + 1) % 3], py[:, i] - py[:, (i + 1) % 3]) for i in range(3)]
        return np.maximum(np.maximum(e[0], e[1]), e[2])

    def circumradius(self) -> np.ndarray:
        """Circumradius of each triangle (a Delaunay triangle is decided by points inside this circle)."""
        t = self.triangles
        px, py = self.x[t], self.y[t]
        a = np.hypot(px[:, 1] - px[:, 2], py[:, 1] - py[:, 2])
        b = np.hypot(px[:, 0] - px[:, 2], py[:, 0] - py[:, 2])
        c = np.hypot(px[:, 0] - px[:, 1], py[:, 0] - py[:, 1])
        area2 = np.abs((px[:, 1] - px[:, 0]) * (py[:, 2] - py[:, 0]) - (px[:, 2] - px[:, 0]) * (py[:, 1] - py[:, 0]))
        with np.errstate(divide="ignore"):
            return np.where(area2 > 0, a * b * c / (2 * area2), np.inf)

    def locate(self, qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Triangle containing each query (-1 outside the hull) and its barycentric weights (n, 3)."""
        qx = np.asarray(qx, np.float64).ravel() - self.ox
        qy = np.asarray(qy, np.float64).ravel() - self.oy
        n = len(qx)
        found = np.full(n, -1, np.int64)
        weights = np.zeros((n, 3))
        if len(self.triangles) == 0 or n == 0:
            return found, weights
        bx = np.clip((qx // self.bcs).astype(np.int64), 0, self.bnx - 1)
        by = np.clip((qy // self.bcs).astype(np.int64), 0, self.bny - 1)
        cur = self.start[by, bx]
        active = np.arange(n)
        nbrs = self.neighbors
        for _ in range(100_000):
            if not len(active):
                break
            T = self.T[cur]
            dx = qx[active] - T[:, 4]
            dy = qy[active] - T[:, 5]
            l0 = T[:, 0] * dx + T[:, 1] * dy
            l1 = T[:, 2] * dx + T[:, 3] * dy
            lam = np.column_stack((l0, l1, 1.0 - l0 - l1))
            worst = np.argmin(lam, axis=1)
            inside = lam[np.arange(len(active)), worst] >= -1e-12
            done_idx = active[inside]
            found[done_idx] = cur[inside]
            weights[done_idx] = lam[inside]
            nxt = nbrs[cur[~inside], worst[~inside]]
            still = active[~inside]
            keep = nxt >= 0  # -1: walked out of the hull
            active = still[keep]
            cur = nxt[keep]
        return found, weights

    def interpolate(self, qx: np.ndarray, qy: np.ndarray, invalid: np.ndarray | None = None,
                    values: np.ndarray | None = None) -> np.ndarray:
        """Linear interpolation at the queries; NaN outside the hull or in ``invalid`` triangles."""
        shape = np.shape(qx)
        tri, w = self.locate(qx, qy)
        v = self.z if values is None else values
        ok = tri >= 0
        if invalid is not None:
            ok &= ~invalid[np.maximum(tri, 0)]
        out = np.full(len(tri), np.nan)
        t = self.triangles[tri[ok]]
        out[ok] = (w[ok] * v[t]).sum(axis=1)
        return out.reshape(shape)
