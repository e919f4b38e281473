"""Crown segmentation from a CHM and tree tops, and crown polygons.

``watershed``: marker-controlled watershed of the inverted CHM
(scikit-image).  ``dalponte2016``: region growing from the tops (Dalponte &
Coomes 2016, lidR parameter names); written here because no Python library
implements it.
"""
from __future__ import annotations

import numpy as np
import shapely
from rasterio import features

from .algorithms import Parameters, algorithm, param
from .grid import Raster


TH_TREE = "Cells lower than this are not crown (m)"


@algorithm("crowns", default=True)
class watershed(Parameters):
    """Marker-controlled watershed of the inverted CHM (scikit-image)."""

    th_tree: float = param(2.0, TH_TREE, minimum=0, maximum=100)

    def segment(self, z: np.ndarray, markers: np.ndarray, res: float) -> np.ndarray:
        from skimage.segmentation import watershed as sk_watershed

        return sk_watershed(-z, markers, mask=(z >= self.th_tree) | (markers > 0)).astype(np.int32)


@algorithm("crowns")
class dalponte2016(Parameters):
    """Region growing (Dalponte & Coomes 2016).

    A cell joins a neighbouring crown when its height exceeds ``th_seed`` times
    the crown's top and ``th_cr`` times the crown's current mean height, is
    above ``th_tree``, and lies within ``max_cr`` metres of the top.
    """

    th_tree: float = param(2.0, TH_TREE, minimum=0, maximum=100)
    th_seed: float = param(0.45, "Share of the crown's top a cell must exceed", minimum=0, maximum=1)
    th_cr: float = param(0.55, "Share of the crown's mean height a cell must exceed", minimum=0, maximum=1)
    max_cr: float = param(10.0, "Farthest a crown reaches from its top (m)", exclusive_minimum=True, minimum=0,
                          maximum=100)

    def segment(self, z: np.ndarray, markers: np.ndarray, res: float) -> np.ndarray:
        return _dalponte(z, markers, res, self)


def _markers(grid, trees, shape):
    r, c, inside = grid.cell_of(np.asarray(trees["x"]), np.asarray(trees["y"]))
    m = np.zeros(shape, np.int32)
    ids = np.arange(1, len(r) + 1, dtype=np.int32)
    m[r[inside], c[inside]] = ids[inside]
    return m


def segment_crowns(chm: Raster, trees: dict[str, np.ndarray], algorithm=watershed()) -> np.ndarray:
    """Label raster: cell value = 1 + index of the tree whose crown holds it (0: none)."""
    z = np.nan_to_num(chm.data.astype(np.float64), nan=0.0)
    return algorithm.segment(z, _markers(chm.grid, trees, z.shape), chm.grid.res)


def _dalponte(z: np.ndarray, markers: np.ndarray, res: float, a: dalponte2016) -> np.ndarray:
    lab = markers.copy()
    n = int(markers.max())
    if n == 0:
        return lab
    rows, cols = np.nonzero(markers)
    ids = markers[rows, cols]
    seed_h = np.zeros(n + 1)
    seed_r = np.zeros(n + 1)
    seed_c = np.zeros(n + 1)
    seed_h[ids], seed_r[ids], seed_c[ids] = z[rows, cols], rows, cols
    rr, cc = np.indices(z.shape)
    for _ in range(int(np.ceil(a.max_cr / res)) + 2):
        sums = np.bincount(lab.ravel(), weights=z.ravel(), minlength=n + 1)
        cnts = np.bincount(lab.ravel(), minlength=n + 1)
        mean_h = np.divide(sums, np.maximum(cnts, 1))
        best = np.zeros(z.shape, np.int32)
        best_h = np.full(z.shape, -np.inf)
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nb = np.zeros_like(lab)
            src = lab[max(dr, 0) : lab.shape[0] + min(dr, 0), max(dc, 0) : lab.shape[1] + min(dc, 0)]
            nb[max(-dr, 0) : lab.shape[0] + min(-dr, 0), max(-dc, 0) : lab.shape[1] + min(-dc, 0)] = src
            # prefer the neighbouring crown with the highest top
            h = np.where(nb > 0, seed_h[nb], -np.inf)
            take = h > best_h
            best = np.where(take, nb, best)
            best_h = np.where(take, h, best_h)
        cand = (lab == 0) & (best > 0) & (z >= a.th_tree)
        b = best[cand]
        zc = z[cand]
        dist = np.hypot(rr[cand] - seed_r[b], cc[cand] - seed_c[b]) * res
        ok = (zc > a.th_seed * seed_h[b]) & (zc > a.th_cr * mean_h[b]) & (dist <= a.max_cr) & (zc <= seed_h[b])
        if not ok.any():
            break
        idx = np.flatnonzero(cand.ravel())[ok]
        lab.ravel()[idx] = b[ok]
    return lab


def crown_polygons(labels: np.ndarray, grid, to_native: float = 1.0) -> dict[int, shapely.Geometry]:
    """Crown polygons by tree index (0-based), in the CRS's native units."""
    out: dict[int, list] = {}
    tr = grid.transform(to_native)
    for geom, v in features.shapes(labels.astype(np.int32), mask=labels > 0, transform=tr, connectivity=4):
        out.setdefault(int(v) - 1, []).append(shapely.geometry.shape(geom))
    return {k: (v[0] if len(v) == 1 else max(v, key=lambda g: g.area)) for k, v in out.items()}


def crown_stats(labels: np.ndarray, res: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Crown area (m²) and equivalent diameter (m) for tree indices 0..n-1."""
    cnt = np.bincount(labels.ravel(), minlength=n + 1)[1 : n + 1]
    area = cnt * res * res
    return area, 2 * np.sqrt(area / np.pi)
