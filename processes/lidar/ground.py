"""Ground classification and noise removal.

Algorithms are small objects carrying their parameters (lidR style):
``classify_ground(points, csf(cloth_resolution=0.5))``,
``classify_noise(points, sor(k=10, m=3))``.  Ground classification reuses the
file's class 2 when present; otherwise the Cloth Simulation Filter (Zhang et
al. 2016, the ``cloth-simulation-filter`` package) drapes a cloth on the
inverted cloud.
"""
from __future__ import annotations

import contextlib
import os
import sys
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .algorithms import Parameters, algorithm, param
from .errors import NoGroundPoints
from .points import GROUND, HIGH_NOISE, LOW_NOISE, Points


@algorithm("ground", default=True)
class csf(Parameters):
    """Cloth Simulation Filter (Zhang et al. 2016; names as in lidR/PDAL ``filters.csf``).

    ``detrend`` removes the large-scale relief (a coarse lower envelope) before
    draping the cloth and restores it afterwards, so the cloth works on a nearly
    flat surface even on steep slopes.
    """

    cloth_resolution: float = param(0.5, "Cloth grid spacing (m)", minimum=0.05, maximum=10)
    rigidness: int = param(1, "1 steep terrain ... 3 flat terrain", "integer", minimum=1, maximum=3)
    class_threshold: float = param(0.25, "Points closer than this to the settled cloth are ground (m)",
                                   minimum=0.0, maximum=5)
    iterations: int = param(500, "Maximum cloth simulation steps", "integer", minimum=1, maximum=5000)
    time_step: float = param(0.65, "Cloth simulation time step", exclusive_minimum=True, minimum=0, maximum=2)
    sloop_smooth: bool = param(True, "Post-process the cloth on steep slopes (CSF's bSloopSmooth)", "boolean")
    detrend: bool = param(True, "Remove the large-scale relief before draping the cloth", "boolean")

    def mask(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return csf_ground_mask(x, y, z, self)


def _lower_envelope(x, y, z, cell: float = 8.0) -> np.ndarray:
    """A smooth surface under the points: per-cell minima, opened, interpolated back to the points.

    Used to detrend steep terrain before CSF; only its large-scale shape
    matters (CSF settles the fine detail).
    """
    from scipy.interpolate import RegularGridInterpolator

    x0, y0 = x.min(), y.min()
    ci = ((x - x0) // cell).astype(np.int64)
    ri = ((y - y0) // cell).astype(np.int64)
    nr, nc = ri.max() + 1, ci.max() + 1
    zmin = np.full(nr * nc, np.inf)
    np.minimum.at(zmin, ri * nc + ci, z)
    zmin = zmin.reshape(nr, nc)
    empty = ~np.isfinite(zmin)
    if empty.all():
        return np.full_like(z, z.min())
    if empty.any():
        _, (iy, ix) = ndimage.distance_transform_edt(empty, return_indices=True)
        zmin = zmin[iy, ix]
    # cells with no ground hit hold canopy minima: a grey opening removes such bumps
    zmin = ndimage.grey_opening(zmin, size=(3, 3), mode="nearest")
    zmin = ndimage.uniform_filter(zmin, size=3, mode="nearest")
    gy = y0 + (np.arange(nr) + 0.5) * cell
    gx = x0 + (np.arange(nc) + 0.5) * cell
    if nr < 2 or nc < 2:
        return np.full_like(z, float(np.median(zmin)))
    f = RegularGridInterpolator((gy, gx), zmin, bounds_error=False, fill_value=None)
    return f(np.column_stack((y, x)))


def csf_ground_mask(x: np.ndarray, y: np.ndarray, z: np.ndarray, algorithm: csf = csf()) -> np.ndarray:
    """Boolean ground mask of points by the Cloth Simulation Filter."""
    import CSF

    if len(x) < 3:
        return np.zeros(len(x), bool)
    zz = z - _lower_envelope(x, y, z) if algorithm.detrend else z - z.min()
    xyz = np.column_stack((x - x.min(), y - y.min(), zz))  # CSF works in float: local origin
    f = CSF.CSF()
    f.params.bSloopSmooth = bool(algorithm.sloop_smooth)
    f.params.cloth_resolution = float(algorithm.cloth_resolution)
    f.params.rigidness = int(algorithm.rigidness)
    f.params.class_threshold = float(algorithm.class_threshold)
    f.params.interations = int(algorithm.iterations)
    f.params.time_step = float(algorithm.time_step)
    f.setPointCloud(xyz)
    ground, non_ground = CSF.VecInt(), CSF.VecInt()
    with _quiet_stdout():  # the C++ library prints its progress on stdout
        f.do_filtering(ground, non_ground, False)
    mask = np.zeros(len(x), bool)
    mask[np.asarray(ground, dtype=np.int64)] = True
    return mask


@contextlib.contextmanager
def _quiet_stdout():
    """Silence writes to file descriptor 1 (C++ code bypasses sys.stdout)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def has_ground_class(points: Points) -> bool:
    return bool(np.any(points.classification == GROUND))


def classify_ground(points: Points, algorithm: csf | None = None, *, reuse: bool = True) -> Points:
    """Points with class 2 on ground points.

    Parameters
    ----------
    points : Points
    algorithm : csf, optional
        Classifier used when the file has no ground class (or ``reuse=False``).
    reuse : bool
        Keep the file's class 2 when there is one (a vendor's classification
        is usually better than any automatic one).

    Raises
    ------
    NoGroundPoints
        When no point ends up as ground.
    """
    if reuse and has_ground_class(points):
        return points
    algorithm = algorithm or csf()
    cls = points.classification.copy()
    cls[cls == GROUND] = 1
    candidates = ~np.isin(cls, (LOW_NOISE, HIGH_NOISE))
    idx = np.flatnonzero(candidates)
    mask = algorithm.mask(points.x[idx], points.y[idx], points.z[idx])
    cls[idx[mask]] = GROUND
    if not mask.any():
        raise NoGroundPoints("the cloth simulation filter found no ground point")
    return points.replace(classification=cls)


# --- noise ---------------------------------------------------------------------


@algorithm("noise")
class sor(Parameters):
    """Statistical outlier removal (PDAL ``filters.outlier`` method=statistical).

    A point is noise when its mean distance to its ``k`` nearest neighbours
    exceeds the global mean of that distance by ``m`` standard deviations.
    """

    k: int = param(10, "Neighbours", "integer", minimum=1, maximum=100)
    m: float = param(3.0, "Standard deviations above the mean distance", exclusive_minimum=True, minimum=0,
                     maximum=20)

    def mask(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return sor_mask(x, y, z, self)


@algorithm("noise", default=True)
class ivf(Parameters):
    """Isolated voxel filter (lidR ``ivf``): noise when the 27 voxels around a
    point hold at most ``n`` points.  Much cheaper than ``sor``."""

    res: float = param(3.0, "Voxel size (m)", exclusive_minimum=True, minimum=0, maximum=50)
    n: int = param(6, "A point with fewer neighbours in its 27 voxels is noise", "integer", minimum=0,
                   maximum=1000)

    def mask(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return ivf_mask(x, y, z, self)


def sor_mask(x, y, z, algorithm: sor = sor()) -> np.ndarray:
    """Outlier mask by statistical outlier removal."""
    if len(x) <= algorithm.k:
        return np.zeros(len(x), bool)
    xyz = np.column_stack((x - x.min(), y - y.min(), z - z.min()))
    d, _ = cKDTree(xyz).query(xyz, k=algorithm.k + 1, workers=-1)
    md = d[:, 1:].mean(axis=1)
    return md > md.mean() + algorithm.m * md.std()


def ivf_mask(x, y, z, algorithm: ivf = ivf()) -> np.ndarray:
    """Outlier mask by the isolated voxel filter (hash of voxel keys, no tree)."""
    if not len(x):
        return np.zeros(0, bool)
    r = algorithm.res
    # voxels on a global lattice, so a tile and the whole scan agree
    i = (np.floor(x / r) - np.floor(x.min() / r)).astype(np.int64) + 1
    j = (np.floor(y / r) - np.floor(y.min() / r)).astype(np.int64) + 1
    k = (np.floor(z / r) - np.floor(z.min() / r)).astype(np.int64) + 1
    nj, nk = j.max() + 2, k.max() + 2
    key = (i * nj + j) * nk + k
    uk, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    total = np.zeros(len(uk), np.int64)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for dk in (-1, 0, 1):
                nb = uk + (di * nj + dj) * nk + dk
                pos = np.searchsorted(uk, nb)
                pos = np.minimum(pos, len(uk) - 1)
                hit = uk[pos] == nb
                total += np.where(hit, cnt[pos], 0)
    return (total - 1)[inv] < algorithm.n  # neighbours besides the point itself


def classify_noise(points: Points, algorithm: sor | ivf | None = None) -> Points:
    """Points with class 7 on outliers found by ``algorithm`` (class 7/18 kept)."""
    m = (algorithm or ivf()).mask(points.x, points.y, points.z)
    cls = points.classification.copy()
    cls[m & (cls != GROUND)] = LOW_NOISE
    return points.replace(classification=cls)


def is_noise(points: Points) -> np.ndarray:
    return np.isin(points.classification, (LOW_NOISE, HIGH_NOISE))


def drop_noise(points: Points) -> Points:
    """The points not classified as noise (class 7 or 18)."""
    m = is_noise(points)
    return points.subset(~m) if m.any() else points
