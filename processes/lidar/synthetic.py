"""Synthetic forests whose every tree and every ground elevation is known.

The tests, the benchmarks and the server's demo data need point clouds with a
known answer.  :func:`make_forest` simulates an airborne scan over a terrain
with slope and relief: conifer cones and broadleaf crowns whose lobes make
false local maxima, open / dense / two-layer stands, shrubs, several returns
per pulse, pulses that pass through crowns (CHM pits), ground hits under the
canopy and noise points.  First returns see the highest surface inside a
laser footprint, as a real beam does.

Those crowns are smooth cones and domes, and real crowns are not: a scan of a real
forest shows conifer whorls and branch tips, broadleaves split into co-dominant
leaders and holed by gaps, saplings and herbs under 2 m.  That roughness is what
makes false tree tops, so the detectors must be measured on it too; ``ROUGH`` turns
it on (off by default: every forest made without it stays as it was, bit for bit).

No library simulates LiDAR over parametric forests in a few milliseconds, so
this module is written by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .points import GROUND, LOW_NOISE, Points
from .synthetic_crowns import Crowns, crown_shapes, herb_layer, others_within

ORIGIN = (500_000.0, 5_400_000.0)  # UTM-like coordinates exercise float precision

STANDS = {
    # trees/ha, height range, share of broadleaf, spacing factor (x sum of radii), ground hits under crowns
    "open": dict(stems=120, h=(15.0, 30.0), broadleaf=0.3, spacing=1.05, p_ground=0.45, p_pit=0.12),
    "dense": dict(stems=600, h=(16.0, 26.0), broadleaf=0.25, spacing=0.75, p_ground=0.15, p_pit=0.20, crown=0.7),
    "two_layer": dict(stems=140, h=(24.0, 32.0), broadleaf=0.2, spacing=1.0, p_ground=0.30, p_pit=0.15,
                      understory=350, under_h=(6.0, 12.0)),
}
# closer to real scans than the defaults (keep those as regression cases): apexes off the
# crown's centre (leaning stems), wavy crown outlines, crowns that let almost half the
# pulses through, a narrow beam (no return sees the apex unless it hits it)
HARD = dict(lean=0.3, irregular=0.25, pass_through=0.45, footprint=0.0)
# rough crowns and ground, as real scans see them (combine with HARD: ``**HARD, **ROUGH``):
# conifer whorls and branch tips up to 0.6 m proud of the cone, broadleaf co-dominant leaders
# (most broadleaves) and gaps (10 % of a crown), regeneration (saplings under 2 m, not trees
# of the truth) and herbs on 40 % of the ground.  Every apex stays its tree's highest point.
ROUGH = dict(branches=0.6, leaders=0.8, gaps=0.1, saplings=1500.0, low_vegetation=0.4)

TERRAINS = {
    # plane slope (dz/dx, dz/dy) and relief amplitudes (m)
    "flat": (0.0, 0.0, 0.0),
    "hilly": (0.08, 0.05, 3.0),
    "steep": (0.45, 0.25, 4.0),
}


@dataclass
class ForestTruth:
    """What the simulated scan really contains."""

    trees: dict[str, np.ndarray]  # x, y, height, crown_radius, crown_length, broadleaf, understory, visible
    ground: Callable[[np.ndarray, np.ndarray], np.ndarray]
    canopy: Callable[[np.ndarray, np.ndarray], np.ndarray]  # true canopy surface height above ground
    bounds: tuple[float, float, float, float]
    is_noise: np.ndarray
    is_ground: np.ndarray
    params: dict = field(default_factory=dict)
    canopy_cells: Callable | None = None  # grid -> highest true canopy surface in each cell
    saplings: dict[str, np.ndarray] = field(default_factory=dict)  # regeneration < 2 m (x, y, height, ...): not trees


def _cell_max(surface: Callable, grid, sub: int = 4) -> np.ndarray:
    """The highest true surface inside each cell (a CHM's definition), from sub x sub samples."""
    cx, cy = grid.centers()
    out = np.zeros(grid.shape)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    for dx in offs:
        for dy in offs:
            out = np.maximum(out, surface(cx + dx * grid.res, cy + dy * grid.res))
    return out


def terrain_function(kind: str = "hilly", origin=ORIGIN, base: float = 300.0):
    """z = f(x, y): a tilted plane with smooth relief (pure function of coordinates)."""
    sx, sy, amp = TERRAINS[kind]
    ox, oy = origin

    def ground(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = np.asarray(x) - ox
        v = np.asarray(y) - oy
        return (base + sx * u + sy * v
                + amp * np.sin(u / 23.0) * np.cos(v / 31.0)
                + 0.4 * amp * np.sin((u + 2 * v) / 13.0))

    return ground


def _place_trees(rng, n, bounds, radii, spacing, existing=None):
    """Dart throwing: keep a candidate if it is far enough from every kept tree."""
    minx, miny, maxx, maxy = bounds
    xs, ys, rs = [], [], []
    ex = existing if existing is not None else (np.empty(0), np.empty(0), np.empty(0), 0.0)
    tries = 0
    i = 0
    while len(xs) < n and tries < n * 60:
        tries += 1
        r = radii[i % len(radii)]
        x = rng.uniform(minx, maxx)
        y = rng.uniform(miny, maxy)
        if xs:
            d = np.hypot(np.asarray(xs) - x, np.asarray(ys) - y)
            if np.any(d < spacing * (np.asarray(rs) + r)):
                continue
        if len(ex[0]):
            d = np.hypot(ex[0] - x, ex[1] - y)
            if np.any(d < ex[3] * ex[2] + 0.5 * r):
                continue
        xs.append(x)
        ys.append(y)
        rs.append(r)
        i += 1
    return np.array(xs), np.array(ys), np.array(rs)


def make_forest(
    kind: str = "open",
    *,
    size: float = 100.0,
    seed: int = 0,
    density: float = 20.0,
    terrain: str = "hilly",
    shrubs: float = 0.05,
    noise: float = 0.0005,
    classified: bool = True,
    footprint: float = 0.08,
    origin: tuple[float, float] = ORIGIN,
    ground_sigma: float = 0.02,
    lean: float = 0.0,
    irregular: float = 0.0,
    pass_through: float | None = None,
    trees: dict[str, np.ndarray] | None = None,
    branches: float = 0.0,
    leaders: float = 0.0,
    gaps: float = 0.0,
    saplings: float = 0.0,
    low_vegetation: float = 0.0,
) -> tuple[Points, ForestTruth]:
    """Simulate an airborne scan of a forest with known trees and terrain.

    Parameters
    ----------
    kind : {"open", "dense", "two_layer"}
        Stand structure (see ``STANDS``).
    size : float
        Side of the square plot in metres.
    density : float
        Laser pulses per m² (returns per m² are ~1.3-1.6 times more).
    terrain : {"flat", "hilly", "steep"}
    shrubs : float
        Share of the ground covered by 0.3-1.5 m shrubs.
    noise : float
        Share of noise points (far below or above the canopy).
    classified : bool
        Whether ground points carry class 2 and some noise class 7 (a
        processed delivery) or every point class 1 (raw).
    footprint : float
        Laser footprint radius: a first return sees the highest surface within it.
    lean : float
        Largest offset of the apex from the crown's centre, as a share of the crown radius.
    irregular : float
        Amplitude of the crown outline's waves (2-5 lobes), as a share of the radius.
    pass_through : float, optional
        Share of the pulses on a crown whose first return comes from inside it (default:
        the stand's).  ``HARD`` gathers the settings closest to real scans.
    trees : dict of arrays, optional
        The trees to scan instead of the stand's own (another forest's ``truth.trees``,
        grown or thinned: a second acquisition of it, with fresh pulses and noise).  Their
        ``rough_key`` (if any) keeps their rough crowns as they were.
    branches : float
        Branch-level relief of the crowns, in metres (0: smooth cones and domes).  A
        conifer's surface steps down whorl by whorl (every 0.5-1 m of depth) and the tips
        of its 6-9 branches per whorl stand out by up to ``branches`` (a third of it near
        the apex, all of it from half the crown's length down): false maxima on the flanks,
        as in real scans.  Broadleaves get leaf clumps of half that height.  The relief
        never exceeds half the depth below the apex, so the apex stays the highest point.
    leaders : float
        Share of the broadleaves split into 2-3 co-dominant leaders: sub-crowns whose tops
        lie 0.5-2 m below the apex, 1-2.5 m from it (at most 0.55 crown radii), with
        saddles between them and the apex — the classic double detection of a broadleaf.
    gaps : float
        Share of each broadleaf crown's area open in 2-4 gaps, where the surface drops
        2-5 m (not below the crown's base); no gap comes within 1 m of the apex.
    saplings : float
        Regeneration, in saplings per hectare of the plot: clumps of 0.5-2 m conifers and
        broadleaves, kept where no crown covers them (they grow in the open).  They are
        in the scan and in ``truth.canopy`` but not trees: ``truth.trees`` keeps the trees
        of 2 m and more, ``truth.saplings`` lists them.
    low_vegetation : float
        Share of the ground under herbs and grass 0.1-0.8 m tall (patches a few metres
        across).  With it, ``truth.canopy`` is the whole vegetation surface the pulses
        see: crowns, saplings, shrubs and herbs (without it, shrubs stay out of it, as
        before).  ``ROUGH`` turns all five on; with any of ``branches``, ``leaders`` or
        ``gaps`` a tree is visible when no other crown comes within 0.25 m of its apex
        height within 1 m of it (checked every 5 cm).  Their randomness has its own
        stream (``[seed, 2]``): the forests made without them stay as they were.

    Returns
    -------
    points : Points
    truth : ForestTruth
    """
    if kind not in STANDS:
        raise ValueError(f"kind must be one of {sorted(STANDS)}")
    p = STANDS[kind]
    given = trees
    rng = np.random.default_rng(seed)
    ox, oy = origin
    bounds = (ox, oy, ox + size, oy + size)
    ground = terrain_function(terrain, origin)
    ha = size * size / 10_000

    # --- trees -----------------------------------------------------------
    n = int(round(p["stems"] * ha))
    h = rng.uniform(*p["h"], n)
    bl = rng.random(n) < p["broadleaf"]
    r, length = crown_shapes(rng, h, bl, p.get("crown", 1.0))
    # place larger crowns first so small ones fill the gaps
    order = np.argsort(-r)
    h, bl, r, length = h[order], bl[order], r[order], length[order]
    x, y, rr = _place_trees(rng, n, bounds, r, p["spacing"])
    k = len(x)
    trees = dict(x=x, y=y, height=h[:k], crown_radius=r[:k], crown_length=length[:k],
                 broadleaf=bl[:k], understory=np.zeros(k, bool))
    if "understory" in p:
        nu = int(round(p["understory"] * ha))
        hu = rng.uniform(*p["under_h"], nu)
        blu = rng.random(nu) < 0.5
        ru, lu = crown_shapes(rng, hu, blu)
        # understory stems avoid the dominant stems (not their crowns)
        ux, uy, _ = _place_trees(rng, nu, bounds, ru, 0.9, existing=(x, y, r[:k], 1.0))
        m = len(ux)
        for key, val in dict(x=ux, y=uy, height=hu[:m], crown_radius=ru[:m], crown_length=lu[:m],
                             broadleaf=blu[:m], understory=np.ones(m, bool)).items():
            trees[key] = np.concatenate([trees[key], val])
    nt = len(trees["x"])
    shape_rng = np.random.default_rng([seed, 1])  # its own stream: the default forests stay as they were
    lean_r = lean * trees["crown_radius"] * np.sqrt(shape_rng.random(nt))
    lean_a = shape_rng.uniform(0, 2 * np.pi, nt)
    trees.update(lean_dx=lean_r * np.cos(lean_a), lean_dy=lean_r * np.sin(lean_a),
                 outline_amp=irregular * shape_rng.uniform(0.5, 1.0, nt),
                 outline_k=shape_rng.integers(2, 6, nt).astype(float), outline_phase=shape_rng.uniform(0, 2 * np.pi, nt))
    if given is not None:  # a rescan of known trees: the stand drawn above only kept the random streams
        trees = {k: np.asarray(v).copy() for k, v in given.items() if k != "visible"}
    for name, val in dict(branches=branches, leaders=leaders, gaps=gaps, saplings=saplings,
                          low_vegetation=low_vegetation).items():
        if not val >= 0:
            raise ValueError(f"{name} must be >= 0, got {val!r}")
    rough = bool(branches or leaders or gaps)
    rough_rng = np.random.default_rng([seed, 2])  # its own stream, like shape_rng: drawn only when asked for
    if rough or saplings or low_vegetation:
        keys = rough_rng.integers(0, 2**63, len(trees["x"]), dtype=np.uint64)
        if rough and "rough_key" not in trees:
            trees["rough_key"] = keys
    crowns = Crowns(trees, rng)
    if rough:
        crowns.roughen(branches, leaders, min(gaps, 0.5))
    # a tree is visible from above when no other crown rises above its top
    # within 0.75 m (its top is then a local maximum of the canopy surface)
    ang = np.arange(8) * np.pi / 4
    rx = trees["x"][:, None] + 0.75 * np.cos(ang)[None]
    ry = trees["y"][:, None] + 0.75 * np.sin(ang)[None]
    ring, _ = crowns.surface(rx, ry)
    top, owner = crowns.surface(trees["x"], trees["y"])
    trees["visible"] = (owner == np.arange(len(trees["x"]))) & (ring.max(axis=1) < trees["height"])
    if rough:  # branch tips are finer than that ring: the highest other crown on a 5 cm disk of 1 m
        others = others_within(crowns, trees)
        trees["visible"] = (owner == np.arange(len(trees["x"]))) & (others < trees["height"] - 0.25)

    # --- regeneration ---------------------------------------------------------
    sap: dict[str, np.ndarray] = {}
    if saplings:
        clumps = rough_rng.poisson(saplings * ha / 8.0)  # clumps of 8 saplings on average, sd 2.5 m
        per = rough_rng.poisson(8.0, clumps)
        sx_ = np.repeat(rough_rng.uniform(bounds[0], bounds[2], clumps), per)
        sy_ = np.repeat(rough_rng.uniform(bounds[1], bounds[3], clumps), per)
        ns = len(sx_)
        sx_, sy_ = sx_ + rough_rng.normal(0, 2.5, ns), sy_ + rough_rng.normal(0, 2.5, ns)
        hs = rough_rng.uniform(0.5, 1.95, ns)
        bls = rough_rng.random(ns) < 0.5
        rs = hs * np.where(bls, rough_rng.uniform(0.3, 0.45, ns), rough_rng.uniform(0.2, 0.3, ns))
        ls = hs * rough_rng.uniform(0.6, 0.9, ns)
        keep = (sx_ > bounds[0]) & (sx_ < bounds[2]) & (sy_ > bounds[1]) & (sy_ < bounds[3])
        keep[keep] = crowns.surface(sx_[keep], sy_[keep])[0] < 0.05  # in the open
        sap = dict(x=sx_[keep], y=sy_[keep], height=hs[keep], crown_radius=rs[keep], crown_length=ls[keep],
                   broadleaf=bls[keep])
        crowns.add_saplings(sap)

    # --- herbs and grass ------------------------------------------------------
    herbs = None
    if low_vegetation:
        herbs = herb_layer(rough_rng, bounds, low_vegetation)

    # --- shrubs ------------------------------------------------------------
    n_sh = int(shrubs * size * size / (np.pi * 1.5**2))
    sx = rng.uniform(bounds[0], bounds[2], n_sh)
    sy = rng.uniform(bounds[1], bounds[3], n_sh)
    sr = rng.uniform(0.8, 2.2, n_sh)
    sh = rng.uniform(0.3, 1.5, n_sh)

    def shrub_height(px, py):
        out = np.zeros(px.shape)
        for j in range(n_sh):
            d2 = ((px - sx[j]) ** 2 + (py - sy[j]) ** 2) / sr[j] ** 2
            m = d2 < 1
            if m.any():
                out[m] = np.maximum(out[m], sh[j] * np.sqrt(1 - d2[m]))
        return out

    def ground_vegetation(px, py):
        z = shrub_height(px, py)
        return z if herbs is None else np.maximum(z, herbs(px, py))

    # --- pulses and returns --------------------------------------------------
    npulse = rng.poisson(density * size * size)
    px = rng.uniform(bounds[0], bounds[2], npulse)
    py = rng.uniform(bounds[1], bounds[3], npulse)
    gz = ground(px, py)
    ztop, own = crowns.surface(px, py, footprint)
    in_crown = ztop > 0.05
    zsh = ground_vegetation(px, py)

    # first return
    u = rng.random(npulse)
    pit = in_crown & (u < (p["p_pit"] if pass_through is None else pass_through))
    pit_ground = pit & (rng.random(npulse) < 0.35)  # the beam passes through the whole crown
    first_h = np.where(in_crown, ztop, np.where(zsh > 0, zsh * rng.uniform(0.7, 1.0, npulse), 0.0))
    ct = crowns.t  # the trees, then the saplings
    base = np.where(own >= 0, ct["height"][np.maximum(own, 0)] - ct["crown_length"][np.maximum(own, 0)], 0.0)
    deep = base + (ztop - base) * rng.uniform(0.1, 0.8, npulse)
    first_h = np.where(pit, np.where(pit_ground, 0.0, deep), first_h)
    # second (intermediate) return inside the crown
    has_second = in_crown & ~pit_ground & (rng.random(npulse) < 0.5)
    second_h = first_h - rng.uniform(1.0, 6.0, npulse)
    has_second &= second_h > np.maximum(base * 0.5, 1.0)
    # last return on the ground (or on a shrub) under vegetation
    under = (in_crown & ~pit_ground) | ((zsh > 0) & ~in_crown)
    has_last = under & (rng.random(npulse) < np.where(in_crown, p["p_ground"], 0.4))
    last_h = np.where(in_crown & (zsh > 0) & (rng.random(npulse) < 0.5), zsh * rng.uniform(0.2, 1.0, npulse), 0.0)
    first_is_ground = ~in_crown & (zsh <= 0) | pit_ground

    nret = 1 + has_second.astype(np.uint8) + has_last.astype(np.uint8)
    cols = []
    # (mask, height above ground, return index expression, is_ground)
    rn2 = np.full(npulse, 2, np.uint8)
    rn3 = np.where(has_second, 3, 2).astype(np.uint8)
    for mask, hh, rn, is_g in (
        (np.ones(npulse, bool), first_h, np.ones(npulse, np.uint8), first_is_ground),
        (has_second, second_h, rn2, np.zeros(npulse, bool)),
        (has_last, last_h, rn3, last_h <= 0),
    ):
        idx = np.flatnonzero(mask)
        cols.append((idx, hh[idx], rn[idx], is_g[idx]))
    idx = np.concatenate([c[0] for c in cols])
    hh = np.concatenate([c[1] for c in cols])
    rn = np.concatenate([c[2] for c in cols])
    is_ground = np.concatenate([c[3] for c in cols])
    X, Y = px[idx], py[idx]
    Z = gz[idx] + hh + np.where(is_ground, rng.normal(0, ground_sigma, len(idx)), rng.normal(0, 0.03, len(idx)))
    NR = nret[idx]
    inten = np.where(is_ground, rng.normal(300, 40, len(idx)), rng.normal(120, 35, len(idx)) * (1.0 / rn))
    # --- noise ----------------------------------------------------------------
    nn = int(noise * len(idx))
    nx = rng.uniform(bounds[0], bounds[2], nn)
    ny = rng.uniform(bounds[1], bounds[3], nn)
    low = rng.random(nn) < 0.5
    nz = ground(nx, ny) + np.where(low, -rng.uniform(3, 20, nn), rng.uniform(45, 120, nn))
    X = np.concatenate([X, nx])
    Y = np.concatenate([Y, ny])
    Z = np.concatenate([Z, nz])
    rn = np.concatenate([rn, np.ones(nn, np.uint8)])
    NR = np.concatenate([NR, np.ones(nn, np.uint8)])
    inten = np.concatenate([inten, rng.normal(50, 10, nn)])
    is_noise = np.concatenate([np.zeros(len(idx), bool), np.ones(nn, bool)])
    is_ground = np.concatenate([is_ground, np.zeros(nn, bool)])
    cls = np.ones(len(X), np.uint8)
    if classified:
        cls[is_ground] = GROUND
        cls[is_noise & (rng.random(len(X)) < 0.5)] = LOW_NOISE  # half of the noise is left unflagged
    # shuffle into acquisition-like order (sorted along flight lines in y)
    o = np.lexsort((X, np.floor((Y - oy) / 5.0)))
    pts = Points(
        x=X[o], y=Y[o], z=Z[o],
        intensity=np.clip(inten[o], 0, 65535).astype(np.uint16),
        return_number=rn[o], number_of_returns=NR[o], classification=cls[o],
    )
    def canopy(qx, qy):
        z = crowns.surface(qx, qy)[0]
        if herbs is not None:  # the whole vegetation the pulses see
            z = np.maximum(z, ground_vegetation(np.asarray(qx, dtype=float), np.asarray(qy, dtype=float)))
        return z

    params = dict(kind=kind, size=size, seed=seed, density=density, terrain=terrain, footprint=footprint,
                  lean=lean, irregular=irregular, pass_through=pass_through)
    if rough or saplings or low_vegetation:
        params.update(branches=branches, leaders=leaders, gaps=gaps, saplings=saplings, low_vegetation=low_vegetation)
    truth = ForestTruth(
        trees=trees,
        ground=ground,
        canopy=canopy,
        canopy_cells=lambda grid: _cell_max(canopy, grid),
        bounds=bounds,
        is_noise=is_noise[o],
        is_ground=is_ground[o],
        params=params,
        saplings=sap,
    )
    return pts, truth


def write_las(
    path: str | Path,
    points: Points,
    *,
    crs: str | int | None = "EPSG:32610",
    version: str = "1.2",
    point_format: int = 1,
    scale: float = 0.001,
) -> Path:
    """Write points as LAS/LAZ (LAZ when the name ends in .laz), with a CRS record."""
    import laspy
    from pyproj import CRS

    path = Path(path)
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.scales = np.array([scale, scale, scale])
    if len(points):
        header.offsets = np.floor([points.x.min(), points.y.min(), points.z.min()])
    if crs is not None:
        header.add_crs(CRS.from_user_input(crs))
    las = laspy.LasData(header)
    las.x = points.x
    las.y = points.y
    las.z = points.z
    las.intensity = points.intensity
    las.return_number = points.return_number
    las.number_of_returns = points.number_of_returns
    las.classification = points.classification
    las.write(str(path))
    return path
