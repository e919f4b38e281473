"""Point cloud metrics: lidR's standard sets, per plot (polygon) and per grid cell.

All metrics are computed for many groups at once: one counting sort puts the
points in group order, each group's heights are sorted, then a compiled loop
(numba, see ``jit``) computes every metric of each group in a few passes over
its points, so a grid of 10 000 cells costs about as much as one plot.
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

from .jit import kernel
from .points import GROUND, Points

QUANTILES = tuple(range(5, 100, 5))
IPCUM_QUANTILES = (10, 30, 50, 70, 90)
Z_METRICS = (["zmax", "zmean", "zsd", "zskew", "zkurt", "zentropy", "pzabovezmean", "pzabove2"]
             + [f"zq{q}" for q in QUANTILES] + [f"zpcum{i}" for i in range(1, 10)])
I_METRICS = ["itot", "imax", "imean", "isd", "iskew", "ikurt", "ipground"] + [f"ipcumzq{q}" for q in IPCUM_QUANTILES]
RN_METRICS = [f"p{i}th" for i in range(1, 6)] + ["pground"]
EXTRA_METRICS = ["n", "cover", "gap", "rumple", "lai"]
METRIC_NAMES = Z_METRICS + I_METRICS + RN_METRICS + EXTRA_METRICS


def _unit(name: str) -> str:
    if name in ("zmax", "zmean", "zsd") or name.startswith("zq"):
        return "metre"
    if name in ("itot", "imax", "imean", "isd"):
        return "intensity"
    if name == "n":
        return "count"
    if name in ("zskew", "zkurt", "zentropy", "iskew", "ikurt", "rumple", "lai"):
        return "1"
    return "percent"  # pzabove*, zpcum*, ipground, ipcumzq*, p1th..p5th, pground, cover, gap


METRIC_UNITS = [_unit(name) for name in METRIC_NAMES]  # one per band of the grid metrics

# Row of each metric in the kernels' output array (one row per metric, one column per group).
_ROW = {k: i for i, k in enumerate(METRIC_NAMES)}
_ZMAX, _ZMEAN, _ZSD, _ZSKEW, _ZKURT, _ZENTROPY, _PZABOVEZMEAN, _PZABOVE2 = (_ROW[k] for k in Z_METRICS[:8])
_ITOT, _IMAX, _IMEAN, _ISD, _ISKEW, _IKURT, _IPGROUND = (_ROW[k] for k in I_METRICS[:7])
_N, _COVER, _GAP, _LAI = (_ROW[k] for k in ("n", "cover", "gap", "lai"))  # rumple: group_metrics
_ZQ, _ZPCUM, _IPCUMZQ, _P1TH, _PGROUND = _ROW["zq5"], _ROW["zpcum1"], _ROW["ipcumzq10"], _ROW["p1th"], _ROW["pground"]
_PROBS = np.array([q / 100 for q in QUANTILES])  # probability of each zq
_IPCUM_AT = np.array([QUANTILES.index(q) for q in IPCUM_QUANTILES])  # their zq among QUANTILES


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
    order, start = _order_by_group(np.asarray(groups, np.int64), int(ngroups))
    zg = np.maximum(np.asarray(points.z, np.float64)[order], 0.0)  # heights in group order
    out = np.full((len(METRIC_NAMES), int(ngroups)), np.nan)
    _fill_groups(zg, _sort_within_groups(zg, start), points.intensity, points.return_number,
                 points.number_of_returns, points.classification, order, start, _PROBS, _IPCUM_AT,
                 float(lad_dz), float(lad_k), float(lad_z0), out)
    m = {k: out[i] for i, k in enumerate(METRIC_NAMES)}
    if dsm_rumple is not None:
        m["rumple"] = np.where(m["n"] == 0, np.nan, dsm_rumple)
    return m


_SHORT_RUN = 64  # groups of up to this many points are sorted by _insertion_sort_runs


def _sort_within_groups(v: np.ndarray, start: np.ndarray) -> np.ndarray:
    """A copy of ``v`` with each group's run ``v[start[g]:start[g + 1]]`` sorted.

    Long runs go to numpy's sort (vectorised: ~10x faster than numba's ``np.sort``), short ones
    to a compiled insertion sort, so neither a few large groups nor many small ones cost much.
    """
    vs = v.copy()
    _insertion_sort_runs(vs, start, _SHORT_RUN)
    for g in np.flatnonzero(np.diff(start) > _SHORT_RUN):
        vs[start[g]:start[g + 1]].sort()
    return vs


# --- compiled per-group loop ------------------------------------------------------------
# numba raises ZeroDivisionError where numpy gives inf/NaN, so every division whose
# denominator can be 0 (a count, a sum of squares, the intensity total) goes through _ratio.


@kernel
def _order_by_group(groups, ngroups):  # pragma: no cover
    """Counting sort: the point indices in group order (original order within a group) and
    the start of each group's run, ``start[ngroups] == len(groups)``."""
    start = np.zeros(ngroups + 1, np.int64)
    for g in groups:
        if g < 0 or g >= ngroups:
            raise ValueError("group index out of range")
        start[g + 1] += 1
    for g in range(ngroups):
        start[g + 1] += start[g]
    order = np.empty(len(groups), np.int64)
    nxt = start[:-1].copy()
    for i in range(len(groups)):
        g = groups[i]
        order[nxt[g]] = i
        nxt[g] += 1
    return order, start


@kernel
def _insertion_sort_runs(v, start, longest):  # pragma: no cover
    """Sort in place each run ``v[start[g]:start[g + 1]]`` of at most ``longest`` values (NaN last,
    as numpy sorts)."""
    for g in range(len(start) - 1):
        a, b = start[g], start[g + 1]
        if b - a > longest:
            continue
        for i in range(a + 1, b):
            x = v[i]
            j = i
            while j > a and (x < v[j - 1] or (v[j - 1] != v[j - 1] and x == x)):
                v[j] = v[j - 1]
                j -= 1
            v[j] = x


@kernel
def _fill_groups(zg, zs, intensity, return_number, number_of_returns, classification, order, start,
                 probs, ipcum_at, lad_dz, lad_k, lad_z0, out):  # pragma: no cover
    """Column g of ``out`` (one row per metric, METRIC_NAMES order) receives the metrics of the
    points ``order[start[g]:start[g + 1]]``, whose heights are ``zg`` over the same range (in the
    points' order, so sums add up as numpy's would) and ``zs`` (sorted); only ``n`` is written
    for an empty group."""
    for g in range(len(start) - 1):
        a, b = start[g], start[g + 1]
        out[_N, g] = b - a
        if a == b:
            continue
        idx = order[a:b]
        col = out[:, g]
        _height_metrics(zg[a:b], zs[a:b], probs, col)
        _intensity_metrics(zg[a:b], intensity[idx].astype(np.float64), classification[idx],
                           col[_ZQ + ipcum_at], col)
        _return_metrics(zg[a:b], return_number[idx], number_of_returns[idx], classification[idx], col)
        col[_LAI] = _lai(zs[a:b], lad_dz, lad_k, lad_z0)


@kernel
def _height_metrics(zg, zs, probs, col):  # pragma: no cover
    """zmax .. zpcum9 of one group: heights ``zg`` (clipped at 0) and the same sorted, ``zs``."""
    n = len(zs)
    zmax = zs[n - 1]
    _, mean, sd, skew, kurt = _moments(zg)
    col[_ZMAX], col[_ZMEAN], col[_ZSD], col[_ZSKEW], col[_ZKURT] = zmax, mean, sd, skew, kurt
    col[_ZENTROPY] = _entropy(zs)
    # counts above a height: n minus the sorted heights at or below it
    col[_PZABOVEZMEAN] = 100 * (n - np.searchsorted(zs, mean, side="right")) / n
    col[_PZABOVE2] = 100 * (n - np.searchsorted(zs, 2.0, side="right")) / n
    for j in range(len(probs)):
        col[_ZQ + j] = _quantile(zs, probs[j])
    for i in range(1, 10):
        # share of heights below i/10 of zmax (0 when zmax is 0)
        below = np.searchsorted(zs, zmax * i / 10, side="left")
        col[_ZPCUM + i - 1] = 100 * below / n if zmax > 0 else 0.0


@kernel
def _intensity_metrics(zg, it, classification, zq, col):  # pragma: no cover
    """itot .. ipcumzq90 of one group: intensities ``it``; ``zq`` are the height quantiles
    of IPCUM_QUANTILES (ipcumzq: % of the intensity total at or below them)."""
    total, mean, sd, skew, kurt = _moments(it)
    ground = 0.0
    imax = -np.inf
    cum = np.zeros(len(zq))
    for j in range(len(it)):
        imax = max(imax, it[j])
        if classification[j] == GROUND:
            ground += it[j]
        for k in range(len(zq)):
            if zg[j] <= zq[k]:
                cum[k] += it[j]
    col[_ITOT], col[_IMAX], col[_IMEAN], col[_ISD], col[_ISKEW], col[_IKURT] = total, imax, mean, sd, skew, kurt
    col[_IPGROUND] = _ratio(100 * ground, total)
    for k in range(len(zq)):
        col[_IPCUMZQ + k] = _ratio(100 * cum[k], total)


@kernel
def _return_metrics(zg, return_number, number_of_returns, classification, col):  # pragma: no cover
    """p1th .. pground, cover and gap of one group (all in %)."""
    n = len(zg)
    by_rank = np.zeros(5)
    ground = first = first_above2 = last = last_below2 = 0
    for j in range(n):
        rn = return_number[j]
        if 1 <= rn <= 5:
            by_rank[rn - 1] += 1
        ground += classification[j] == GROUND
        if rn <= 1:
            first += 1
            first_above2 += zg[j] > 2
        if rn >= number_of_returns[j]:
            last += 1
            last_below2 += zg[j] <= 2
    for r in range(5):
        col[_P1TH + r] = 100 * by_rank[r] / n
    col[_PGROUND] = 100 * ground / n
    col[_COVER] = _ratio(100.0 * first_above2, first)
    col[_GAP] = _ratio(100.0 * last_below2, last)


@kernel
def _moments(v):  # pragma: no cover
    """Sum, mean, sd (n - 1), skewness and kurtosis (lidR's, not the excess) of ``v``:
    the mean first, then sums of its deviations' powers."""
    n = len(v)
    s = 0.0
    for x in v:
        s += x
    mean = s / n
    m2 = m3 = m4 = 0.0
    for x in v:
        d = x - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
    sd = np.sqrt(_ratio(m2, n - 1.0))
    skew = _ratio(m3 / n, (m2 / n) ** 1.5)
    kurt = _ratio(n * m4, m2 * m2)
    return s, mean, sd, skew, kurt


@kernel
def _quantile(zs, q):  # pragma: no cover
    """Type-7 (numpy 'linear') quantile ``q`` of the sorted values ``zs``."""
    h = (len(zs) - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, len(zs) - 1)
    return zs[lo] + (zs[hi] - zs[lo]) * (h - lo)


@kernel
def _entropy(zs):  # pragma: no cover
    """lidR's ``entropy``: Shannon entropy of the shares of the heights in 1 m layers from 0 to
    ceiling(zmax) (the top layer closed), over log(number of layers); NaN when zmax < 2."""
    zmax = zs[len(zs) - 1]
    if not zmax >= 2:  # NaN too
        return np.nan
    nb = int(np.ceil(zmax))
    cnt = np.zeros(nb, np.int64)
    for x in zs:
        cnt[min(int(np.floor(x)), nb - 1)] += 1
    s = 0.0
    for c in cnt:
        if c > 0:
            p = c / len(zs)
            s += p * np.log(p)
    return -s / np.log(nb)


@kernel
def _lai(zs, dz, k, z0):  # pragma: no cover
    """Leaf area index of one group (sorted heights ``zs``): the LAD of its layers (Bouvier et al.
    2015, as in :func:`lad_profile`) summed, times dz.

    Layer 0 holds the heights below z0, layer j >= 1 those in [z0 + (j-1) dz, z0 + j dz), up to the
    layer of zmax.  The gap fraction of layer j is (heights below it) / (heights below its top),
    LAD = -ln(gf) / (k dz); a layer whose LAD is not finite (no height below it) adds 0.
    """
    layer = np.empty(len(zs), np.int64)
    for j in range(len(zs)):
        layer[j] = max(int(np.floor((zs[j] - z0) / dz)) + 1, 0)
    cnt = np.zeros(layer.max() + 1)
    for j in layer:
        cnt[j] += 1
    total = 0.0
    below = cnt[0]
    for j in range(1, len(cnt)):
        below_top = below + cnt[j]
        lad = _ratio(-np.log(_ratio(below, below_top)), k * dz)
        if np.isfinite(lad):
            total += lad
        below = below_top
    return total * dz


@kernel
def _ratio(a, b):  # pragma: no cover
    """``a / b`` as numpy divides: NaN for 0/0 (or NaN/0), a signed infinity for x/0."""
    if b != 0:
        return a / b
    if a == 0 or a != a:
        return np.nan
    return np.inf if (a > 0) == (np.copysign(1.0, b) > 0) else -np.inf


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
