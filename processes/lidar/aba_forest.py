"""Simulated forests for the area-based approach: attributes known exactly, field plots with error.

An area-based model needs stands that differ: :func:`make_aba_forest` grows forests
whose density and height vary over the area (``FAMILIES``), scans them with
:func:`.synthetic.make_forest` (tile by tile), and gives every tree a diameter and a stem volume
from stated allometries, so stems/ha, basal area and volume of every plot, cell and
of the whole forest are known exactly. :func:`field_plots` measures circular plots
as a field crew does (tape, hypsometer, GNSS under canopy), with their errors.

Allometries (trees carry them as ``dbh`` in cm and ``volume`` in m³):

- diameter from height H (m) and crown diameter CD (m), the form of Jucker et al. (2017,
  Global Change Biology 23:177) with their global coefficients:
  DBH = 0.557 · (H · CD)^0.809, times a log-normal tree effect (sd 0.10) — LiDAR sees
  height and crown, never the stem, so no metric predicts a plot exactly;
- stem volume by the form-factor method, V = f · g · H with g = π/4 · (DBH/100)² and
  f = 0.45 (a Schumacher–Hall form V = a·D^b·H^c with b = 2, c = 1; 0.4-0.5 is the usual
  breast-height form factor of conifers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import metrics as metricsmod
from .grid import Grid
from .points import Points
from .synthetic import ORIGIN, make_forest
from .synthetic_crowns import crown_shapes

FORM_FACTOR = 0.45
DBH_SD = 0.10
# field measurement errors: caliper/tape 3 % of DBH, hypsometer 5 % of height, plot centre by GNSS
# under canopy 2 m (sd per axis); what a crew's plot and the LiDAR's plot do not share
FIELD_ERRORS = dict(dbh=0.03, height=0.05, position=2.0)
ATTRIBUTES = {"stems": "1/ha", "basal_area": "m2/ha", "volume": "m3/ha"}

FAMILIES = {
    # "blocks": managed stands, 100 m blocks of one age (height) and density each
    "blocks": dict(block=100.0, stems=(150, 900), h=(10.0, 30.0), broadleaf=0.2),
    # "gradient": a natural forest whose density and site quality vary smoothly, mixed species
    "gradient": dict(block=None, stems=(120, 800), h=(12.0, 32.0), broadleaf=0.5),
}


def dbh_from(height: np.ndarray, crown_diameter: np.ndarray) -> np.ndarray:
    """DBH (cm) from height and crown diameter (m): Jucker et al. 2017, D = 0.557 (H·CD)^0.809."""
    return 0.557 * (np.asarray(height) * np.asarray(crown_diameter)) ** 0.809


def basal_area(dbh_cm: np.ndarray) -> np.ndarray:
    """Cross-section at breast height (m²)."""
    return np.pi / 4 * (np.asarray(dbh_cm) / 100) ** 2


def stem_volume(dbh_cm: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Stem volume (m³): V = f·g·H, f = ``FORM_FACTOR``."""
    return FORM_FACTOR * basal_area(dbh_cm) * np.asarray(height)


def _fields(family: str, size: float, seed: int):
    """Density (stems/ha) and height at (u, v) metres from the forest's corner."""
    f = FAMILIES[family]
    rng = np.random.default_rng([seed, 7])
    (s0, s1), (h0, h1) = f["stems"], f["h"]
    if f["block"]:
        nb = int(np.ceil(size / f["block"]))
        dens = rng.uniform(s0, s1, (nb, nb))
        hts = rng.uniform(h0, h1, (nb, nb))

        def at(u, v):
            i = np.clip((u // f["block"]).astype(int), 0, nb - 1)
            j = np.clip((v // f["block"]).astype(int), 0, nb - 1)
            return dens[i, j], hts[i, j]
        return at
    ph = rng.uniform(0, 2 * np.pi, 4)

    def at(u, v):
        a = 0.5 + 0.25 * np.sin(u / size * 2.1 * np.pi + ph[0]) + 0.25 * np.cos(v / size * 1.7 * np.pi + ph[1])
        b = 0.5 + 0.3 * np.sin((u + v) / size * 1.3 * np.pi + ph[2]) + 0.2 * np.cos(u / size * 3.1 + ph[3])
        return s0 + (s1 - s0) * np.clip(a, 0, 1), h0 + (h1 - h0) * np.clip(b, 0, 1)
    return at


def grow_trees(family: str = "blocks", size: float = 400.0, seed: int = 0, origin=ORIGIN) -> dict[str, np.ndarray]:
    """Trees of a varying forest: thinned Poisson stems (density field), heights from the
    height field ± 15 %, crowns from height (narrower where stands are dense), spacing kept."""
    at = _fields(family, size, seed)
    f = FAMILIES[family]
    rng = np.random.default_rng(seed)
    smax = f["stems"][1]
    n = rng.poisson(smax * size * size / 10_000 * 1.3)
    u, v = rng.uniform(0, size, n), rng.uniform(0, size, n)
    dens, hmean = at(u, v)
    keep = rng.random(n) < dens / (smax * 1.3)
    u, v, dens, hmean = u[keep], v[keep], dens[keep], hmean[keep]
    h = hmean * rng.uniform(0.85, 1.15, len(u))
    bl = rng.random(len(u)) < f["broadleaf"]
    crowd = 1.0 - 0.35 * (dens - f["stems"][0]) / (smax - f["stems"][0])     # 1 (open) .. 0.65 (densest)
    r, length = crown_shapes(rng, h, bl)
    r = r * crowd
    # stems closer than 0.6 x the sum of crown radii are removed (self-thinning), tallest kept
    order = np.argsort(-h)
    cell = 4.0
    occupied: dict[tuple[int, int], list[int]] = {}
    kept = []
    for i in order:
        ci, cj = int(u[i] // cell), int(v[i] // cell)
        ok = True
        for di in (-2, -1, 0, 1, 2):
            for dj in (-2, -1, 0, 1, 2):
                for k in occupied.get((ci + di, cj + dj), ()):
                    if np.hypot(u[k] - u[i], v[k] - v[i]) < 0.6 * (r[k] + r[i]):
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            occupied.setdefault((ci, cj), []).append(i)
            kept.append(i)
    k = np.array(sorted(kept))
    m = len(k)
    cd = 2 * r[k]
    dbh = dbh_from(h[k], cd) * np.exp(rng.normal(0, DBH_SD, m))
    return dict(x=origin[0] + u[k], y=origin[1] + v[k], height=h[k], crown_radius=r[k], crown_length=length[k],
                broadleaf=bl[k], understory=np.zeros(m, bool), lean_dx=np.zeros(m), lean_dy=np.zeros(m),
                outline_amp=np.zeros(m), outline_k=np.full(m, 3.0), outline_phase=np.zeros(m),
                dbh=dbh, volume=stem_volume(dbh, h[k]))


@dataclass
class AbaForest:
    points: Points              # height-normalised, noise removed, sorted by x
    trees: dict[str, np.ndarray]
    size: float
    bounds: tuple[float, float, float, float]
    raw: Points | None = None   # the scan as flown (absolute heights over the flat terrain), for LAS files

    def attributes_in(self, mask: np.ndarray, area_ha: float, dbh=None, height=None) -> dict[str, float]:
        """Stems/ha, basal area (m²/ha) and volume (m³/ha) of the trees in ``mask``."""
        d = self.trees["dbh"] if dbh is None else dbh
        h = self.trees["height"] if height is None else height
        return {"stems": float(mask.sum() / area_ha), "basal_area": float(basal_area(d[mask]).sum() / area_ha),
                "volume": float(stem_volume(d[mask], h[mask]).sum() / area_ha)}

    def totals(self) -> dict[str, float]:
        """The whole forest's true totals (stems, m², m³)."""
        ha = self.size * self.size / 10_000
        return {k: v * ha for k, v in self.attributes_in(np.ones(len(self.trees["x"]), bool), ha).items()}


SCAN_TILE = 100.0   # the forest is scanned in 100 m tiles: the simulator's cost grows with trees² per call


def make_aba_forest(family: str = "blocks", size: float = 400.0, seed: int = 0, density: float = 3.0,
                    keep_raw: bool = False, origin=ORIGIN) -> AbaForest:
    """Grow and scan a varying forest (``density`` pulses/m²: ABA is flown sparse).

    The scan is simulated tile by tile over flat terrain (every tile sees the crowns that
    reach into it, so tiles join without seams); the points are normalised with the true
    ground and the noise points dropped (both steps are scored against truth elsewhere).
    """
    if size % SCAN_TILE:
        raise ValueError(f"size must be a multiple of {SCAN_TILE:g} m")
    trees = grow_trees(family, size, seed, origin)
    scan_trees = {k: v for k, v in trees.items() if k not in ("dbh", "volume")}
    reach = float(trees["crown_radius"].max()) + 1.0
    parts, raws = [], []
    nt = int(size // SCAN_TILE)
    for i in range(nt):
        for j in range(nt):
            tx, ty = origin[0] + i * SCAN_TILE, origin[1] + j * SCAN_TILE
            near = ((trees["x"] > tx - reach) & (trees["x"] < tx + SCAN_TILE + reach)
                    & (trees["y"] > ty - reach) & (trees["y"] < ty + SCAN_TILE + reach))
            pts, truth = make_forest("open", size=SCAN_TILE, seed=seed * 1000 + i * nt + j, density=density,
                                     terrain="flat", shrubs=0.01, origin=(tx, ty),
                                     trees={k: v[near] for k, v in scan_trees.items()})
            if keep_raw:
                raws.append(pts)
            pts = pts.subset(np.flatnonzero(~truth.is_noise))
            parts.append(pts.replace(z=pts.z - truth.ground(pts.x, pts.y)))
    pts = Points.concat(parts)
    pts = pts.subset(np.argsort(pts.x, kind="stable"))
    bounds = (origin[0], origin[1], origin[0] + size, origin[1] + size)
    return AbaForest(pts, trees, size, bounds, Points.concat(raws) if keep_raw else None)


def place_plots(forest: AbaForest, n: int = 40, area_m2: float = 400.0, seed: int = 0) -> np.ndarray:
    """Centres (n, 2) of non-overlapping circular plots inside the forest (a margin of the GNSS error)."""
    rng = np.random.default_rng([seed, 11])
    r = np.sqrt(area_m2 / np.pi)
    margin = r + 3 * FIELD_ERRORS["position"]
    x0, y0 = forest.bounds[:2]
    out: list[tuple[float, float]] = []
    for _ in range(n * 2000):
        if len(out) == n:
            break
        c = rng.uniform(margin, forest.size - margin, 2) + (x0, y0)
        if all(np.hypot(c[0] - a, c[1] - b) > 2 * r + 1 for a, b in out):
            out.append((float(c[0]), float(c[1])))
    if len(out) < n:
        raise ValueError(f"could not place {n} plots of {area_m2:g} m² apart in this forest")
    return np.array(out)


def field_plots(forest: AbaForest, centres: np.ndarray, area_m2: float = 400.0, seed: int = 0,
                errors: dict | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """What a crew measures on each plot, and the plots' true values.

    The crew stands at the true centre and tallies every stem within the radius, with
    DBH and height measured with ``FIELD_ERRORS`` relative errors; the plot's recorded
    position is off by the GNSS error. Returns (measured, true) attributes per plot and
    the recorded centres (where the LiDAR metrics are computed).
    """
    e = FIELD_ERRORS | (errors or {})
    rng = np.random.default_rng([seed, 13])
    t = forest.trees
    r = np.sqrt(area_m2 / np.pi)
    ha = area_m2 / 10_000
    meas = {k: np.empty(len(centres)) for k in ATTRIBUTES}
    true = {k: np.empty(len(centres)) for k in ATTRIBUTES}
    d_meas = t["dbh"] * (1 + rng.normal(0, e["dbh"], len(t["dbh"])))
    h_meas = t["height"] * (1 + rng.normal(0, e["height"], len(t["height"])))
    for i, (cx, cy) in enumerate(centres):
        inside = np.hypot(t["x"] - cx, t["y"] - cy) <= r
        for k, v in forest.attributes_in(inside, ha, d_meas, h_meas).items():
            meas[k][i] = v
        for k, v in forest.attributes_in(inside, ha).items():
            true[k][i] = v
    recorded = centres + rng.normal(0, e["position"], centres.shape)
    return meas, true, recorded


def plot_metrics(points: Points, centres: np.ndarray, area_m2: float = 400.0) -> dict[str, np.ndarray]:
    """LiDAR metrics (:func:`.metrics.group_metrics`) of the points inside each circular plot."""
    r = np.sqrt(area_m2 / np.pi)
    group = np.full(len(points), -1, np.int64)
    for i, (cx, cy) in enumerate(centres):
        lo, hi = np.searchsorted(points.x, [cx - r, cx + r]) if _sorted_x(points) else (0, len(points))
        sel = np.arange(lo, hi)
        inside = np.hypot(points.x[sel] - cx, points.y[sel] - cy) <= r
        group[sel[inside]] = i
    m = group >= 0
    return metricsmod.group_metrics(points.subset(np.flatnonzero(m)), group[m], len(centres))


def _sorted_x(points: Points) -> bool:
    return bool(len(points) < 2 or np.all(np.diff(points.x) >= 0))


def grid_metrics(points: Points, grid: Grid) -> np.ndarray:
    """Every metric per grid cell, as (n_metrics, rows, cols) bands in ``METRIC_NAMES`` order."""
    row, col, inside = grid.cell_of(points.x, points.y)
    idx = np.flatnonzero(inside)
    m = metricsmod.group_metrics(points.subset(idx), row[idx] * grid.ncol + col[idx], grid.nrow * grid.ncol)
    return np.stack([m[k].reshape(grid.shape) for k in metricsmod.METRIC_NAMES])


def cell_truth(forest: AbaForest, grid: Grid) -> dict[str, np.ndarray]:
    """True per-hectare attributes of every grid cell (trees by stem position)."""
    t = forest.trees
    row, col, inside = grid.cell_of(t["x"], t["y"])
    cell = np.where(inside, row * grid.ncol + col, 0)
    ha = grid.res * grid.res / 10_000
    w = {"stems": np.ones(len(t["x"])), "basal_area": basal_area(t["dbh"]), "volume": t["volume"]}
    return {k: (np.bincount(cell[inside], v[inside], grid.nrow * grid.ncol) / ha).reshape(grid.shape)
            for k, v in w.items()}
