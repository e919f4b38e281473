"""Point cloud metrics: lidR's standard sets, per plot (polygon) and per grid cell.

All metrics are computed for many groups at once (one sort, a few
``bincount``\\ s), so a grid of 10 000 cells costs about as much as one plot.
Definitions follow lidR (``stdmetrics_z``, ``stdmetrics_i``,
``stdmetrics_rn``, ``entropy``, ``LAD``); heights below 0 are clipped to 0
first (lidR users filter them; its entropy is undefined on negative heights).

Names: zmax, zmean, zsd, zskew, zkurt, zentropy, pzabovezmean, pzabove2,
zq5..zq95, zpcum1..zpcum9, itot, imax, imean, isd, iskew, ikurt, ipground,
ipcumzq10..ipcumzq90, p1th..p5th, pground, n, cover (% of first returns above
2 m), gap (% of last returns at or below 2 m), rumple, lai (sum of the LAD
profile).

Written here because no Python library implements lidR's metric sets; the
tests check every value against a direct numpy computation of the definition.
"""
from __future__ import annotations

import numpy as np

from .points import GROUND, Points

QUANTILES = tuple(range(5, 100, 5))
Z_METRICS = (["zmax", "zmean", "zsd", "zskew", "zkurt", "zentropy", "pzabovezmean", "pzabove2"]
             + [f"zq{q}" for q in QUANTILES] + [f"zpcum{i}" for i in range(1, 10)])
I_METRICS = ["itot", "imax", "imean", "isd", "iskew", "ikurt", "ipground"] + [f"ipcumzq{q}" for q in (10, 30, 50, 70, 90)]
RN_METRICS = [f"p{i}th" for i in range(1, 6)] + ["pground"]
EXTRA_METRICS = ["n", "cover", "gap", "rumple", "lai"]
METRIC_NAMES = Z_METRICS + I_METRICS + RN_METRICS + EXTRA_METRICS


def _moments(v: np.ndarray, g: np.ndarray, n: np.ndarray, ng: int):
    s = np.bincount(g, weights=v, minlength=ng)
    mean = s / np.maximum(n, 1)
    d = v - mean[g]
    m2 = np.bincount(g, weights=d * d, minlength=ng)
    m3 = np.bincount(g, weights=d**3, minlength=ng)
    m4 = np.bincount(g, weights=d**4, minlength=ng)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(m2 / (n - 1))
        skew = (m3 / n) / (m2 / n) ** 1.5
        kurt = n * m4 / (m2 * m2)
    return s, mean, sd, skew, kurt


def _sorted_quantiles(zs: np.ndarray, start: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """Type-7 (numpy 'linear') quantile of each group of the group-sorted values."""
    h = (n - 1) * q
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    t = h - lo
    ok = n > 0
    out = np.full(len(n), np.nan)
    a = zs[(start + lo)[ok]]
    b = zs[(start + hi)[ok]]
    out[ok] = a + (b - a) * t[ok]
    return out


def group_metrics(points: Points, groups: np.ndarray, ngroups: int, *, dsm_rumple: np.ndarray | None = None,
                  lad_dz: float = 1.0, lad_k: float = 0.5, lad_z0: float = 2.0) -> dict[str, np.ndarray]:
    """Every metric for each group of points (height-normalised, noise removed).

    Parameters
    ----------
    points : Points
        Normalised points; ``z`` is height above ground.
    groups : int array
        Group index (0..ngroups-1) of each point.
    ngroups : int
    dsm_rumple : array, optional
        Rumple index per group computed elsewhere (needs a surface, see
        :func:`rumple_index`); NaN when not given.

    Returns
    -------
    dict of name -> array of length ngroups (NaN for empty groups).
    """
    z = np.maximum(points.z, 0.0)
    g = np.asarray(groups, np.int64)
    n = np.bincount(g, minlength=ngroups).astype(np.float64)
    out: dict[str, np.ndarray] = {"n": n.copy()}
    empty = n == 0
    order = np.lexsort((z, g))
    zs = z[order]
    start = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    ni = n.astype(np.int64)
    zmax = np.full(ngroups, np.nan)
    zmax[~empty] = zs[start[~empty] + ni[~empty] - 1]
    _, zmean, zsd, zskew, zkurt = _moments(z, g, n, ngroups)
    out.update(zmax=zmax, zmean=zmean, zsd=zsd, zskew=zskew, zkurt=zkurt)
    # entropy (lidR: 1 m layers from 0 to ceiling(zmax), NA when zmax < 2)
    nb = np.where(empty, 1, np.maximum(np.ceil(np.nan_to_num(zmax)), 1)).astype(np.int64)
    off = np.concatenate([[0], np.cumsum(nb)[:-1]])
    b = np.minimum(np.floor(z).astype(np.int64), nb[g] - 1)
    cnt = np.bincount(off[g] + b, minlength=int(nb.sum()))
    p = cnt / np.repeat(np.maximum(n, 1), nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0)
        s = np.add.reduceat(plogp, off) if len(off) else np.zeros(0)
        ent = -s / np.log(nb)
    ent[(np.nan_to_num(zmax) < 2) | empty] = np.nan
    out["zentropy"] = ent
    with np.errstate(divide="ignore", invalid="ignore"):
        out["pzabovezmean"] = 100 * np.bincount(g, weights=(z > zmean[g]), minlength=ngroups) / n
        out["pzabove2"] = 100 * np.bincount(g, weights=(z > 2), minlength=ngroups) / n
    for q in QUANTILES:
        out[f"zq{q}"] = _sorted_quantiles(zs, start, ni, q / 100)
    for i in range(1, 10):
        with np.errstate(divide="ignore", invalid="ignore"):
            v = 100 * np.bincount(g, weights=(z < zmax[g] * i / 10), minlength=ngroups) / n
        out[f"zpcum{i}"] = np.where(np.nan_to_num(zmax) > 0, v, np.where(empty, np.nan, 0.0))
    # intensity
    it = points.intensity.astype(np.float64)
    itot, imean, isd, iskew, ikurt = _moments(it, g, n, ngroups)
    imax = np.full(ngroups, -np.inf)
    np.maximum.at(imax, g, it)
    out.update(itot=itot, imax=np.where(empty, np.nan, imax), imean=imean, isd=isd, iskew=iskew, ikurt=ikurt)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ipground"] = 100 * np.bincount(g, weights=it * (points.classification == GROUND), minlength=ngroups) / itot
        for q in (10, 30, 50, 70, 90):
            zq = out[f"zq{q}"] if q in QUANTILES else _sorted_quantiles(zs, start, ni, q / 100)
            out[f"ipcumzq{q}"] = 100 * np.bincount(g, weights=it * (z <= zq[g]), minlength=ngroups) / itot
        # returns
        for r in range(1, 6):
            out[f"p{r}th"] = 100 * np.bincount(g, weights=(points.return_number == r), minlength=ngroups) / n
        out["pground"] = 100 * np.bincount(g, weights=(points.classification == GROUND), minlength=ngroups) / n
        first = points.return_number <= 1
        nf = np.bincount(g, weights=first, minlength=ngroups)
        out["cover"] = 100 * np.bincount(g, weights=first & (z > 2), minlength=ngroups) / nf
        last = points.return_number >= points.number_of_returns
        nl = np.bincount(g, weights=last, minlength=ngroups)
        out["gap"] = 100 * np.bincount(g, weights=last & (z <= 2), minlength=ngroups) / nl
    out["rumple"] = np.full(ngroups, np.nan) if dsm_rumple is None else dsm_rumple
    out["lai"] = lai(z, g, ngroups, dz=lad_dz, k=lad_k, z0=lad_z0)
    for k in out:
        if k != "n":
            out[k] = np.where(empty, np.nan, out[k])
    return {k: out[k] for k in METRIC_NAMES}


def lad_profile(z: np.ndarray, dz: float = 1.0, k: float = 0.5, z0: float = 2.0) -> dict[str, list[float]]:
    """Leaf area density profile (Bouvier et al. 2015, lidR ``LAD``).

    For each layer [h, h+dz) above ``z0`` the gap fraction is the share of the
    returns reaching the layer (below its top) that also pass it (below its
    bottom); LAD = -ln(gap fraction) / (k dz).
    """
    z = np.maximum(np.asarray(z, float), 0.0)
    if not len(z) or z.max() <= z0 + dz:
        return {"z": [], "lad": []}
    top = np.ceil((z.max() - z0) / dz) * dz + z0
    edges = np.arange(z0, top + dz / 2, dz)
    below = np.searchsorted(np.sort(z), edges, side="left").astype(float)  # returns below each edge
    with np.errstate(divide="ignore", invalid="ignore"):
        gf = below[:-1] / below[1:]
        lad = -np.log(gf) / (k * dz)
    lad = np.where(np.isfinite(lad), lad, np.nan)
    return {"z": (edges[:-1] + dz / 2).tolist(), "lad": lad.tolist()}


def lai(z: np.ndarray, g: np.ndarray, ngroups: int, dz: float = 1.0, k: float = 0.5, z0: float = 2.0) -> np.ndarray:
    """Leaf area index per group: the LAD profile summed over its layers (times dz)."""
    zc = np.maximum(z, 0.0)
    layer = np.floor((zc - z0) / dz).astype(np.int64)  # -1.. for returns below z0
    layer = np.maximum(layer + 1, 0)  # 0: below z0
    nl = int(layer.max()) + 2 if len(layer) else 2
    cnt = np.bincount(g * nl + layer, minlength=ngroups * nl).reshape(ngroups, nl).astype(float)
    below = np.cumsum(cnt, axis=1)  # returns below the top of layer j
    with np.errstate(divide="ignore", invalid="ignore"):
        gf = below[:, :-1] / below[:, 1:]  # layer j+1 (above z0): below its bottom / below its top
        lad = -np.log(gf) / (k * dz)
    lad = np.where(np.isfinite(lad), lad, 0.0)
    return lad.sum(axis=1) * dz


def rumple_index(surface: np.ndarray, res: float) -> float:
    """Surface area / projected area of a raster surface (1 for a flat canopy).

    Each square of four neighbouring cell centres is split into two triangles;
    squares with a missing corner are left out.
    """
    a, b, c, d = surface[:-1, :-1], surface[:-1, 1:], surface[1:, :-1], surface[1:, 1:]
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(d)
    if not ok.any():
        return float("nan")
    area = _tri_area(a, b, c, res) + _tri_area(d, c, b, res)
    return float(area[ok].sum() / (ok.sum() * res * res))


def _tri_area(z0, z1, z2, res):
    # right triangle (0,0,z0), (res,0,z1), (0,res,z2) and its mirror
    ux, uy, uz = res, 0.0, z1 - z0
    vx, vy, vz = 0.0, res, z2 - z0
    cx = uy * vz - uz * vy
    cy = uz * vx - ux * vz
    cz = ux * vy - uy * vx
    return 0.5 * np.sqrt(cx * cx + cy * cy + cz * cz)


def rumple_per_cell(dsm: np.ndarray, factor: int, res: float) -> np.ndarray:
    """Rumple index of each block of ``factor`` x ``factor`` DSM cells (a metrics cell)."""
    nr, nc = dsm.shape[0] // factor, dsm.shape[1] // factor
    d = dsm[: nr * factor, : nc * factor]
    a, b, c, e = d[:-1, :-1], d[:-1, 1:], d[1:, :-1], d[1:, 1:]
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(e)
    area = np.where(ok, _tri_area(a, b, c, res) + _tri_area(e, c, b, res), 0.0)
    # a square belongs to a block when its four corners do
    rr = np.arange(a.shape[0])
    cc = np.arange(a.shape[1])
    rin = (rr // factor) == ((rr + 1) // factor)
    cin = (cc // factor) == ((cc + 1) // factor)
    inside = ok & rin[:, None] & cin[None, :]
    blk = (rr[:, None] // factor) * nc + (cc[None, :] // factor)
    num = np.bincount(blk[inside], weights=area[inside], minlength=nr * nc)
    den = np.bincount(blk[inside], minlength=nr * nc) * res * res
    with np.errstate(divide="ignore", invalid="ignore"):
        return (num / den).reshape(nr, nc)


def cloud_metrics(points: Points, *, rumple_res: float = 1.0) -> dict:
    """All metrics of one set of normalised points (a plot), plus its LAD profile."""
    g = np.zeros(len(points), np.int64)
    rum = np.array([np.nan])
    if len(points):
        from .grid import Grid
        from .surface import max_per_cell

        grid = Grid.covering((points.x.min(), points.y.min(), points.x.max(), points.y.max()), rumple_res)
        rum = np.array([rumple_index(max_per_cell(points.x, points.y, np.maximum(points.z, 0), grid), rumple_res)])
    m = group_metrics(points, g, 1, dsm_rumple=rum)
    out = {k: (None if not np.isfinite(v[0]) else float(v[0])) for k, v in m.items()}
    out["lad"] = lad_profile(points.z)
    return out
