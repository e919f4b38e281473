"""Consistency benchmark on a real scan: no truth needed, figures only (never passes or fails).

A tree detector that finds real stems should give about the same trees when the scan is
thinned or the CHM cell changes, and should not put two tall trees within 1.5 m of each
other.  Each run is one ``inventory`` of the whole scan (tiles of 100 m, buffer 30 m, one job):

  (a) the defaults (no ``resolution`` passed: the default may become scan-dependent);
  (b) the scan thinned by pulses to 50 / 25 / 10 % (every return of a kept pulse, fixed seed);
  (c) the CHM cell forced to 0.5 / 0.75 / 1.0 m;
  (d) on bcts only, the lidR / lasR tree tops in ``../shared/data/peers`` (read, not run).

One row per run: trees, stems/ha on the scan's footprint (all and by height class), trees
>= 10 m and their change against (a), crown diameter p10/p50/p90, the share of trees with
another tree (of any height) closer than 1.5 m (all trees, and trees >= 10 m), the lowest
tree, seconds.  Then the acceptance figures, measured (targets in brackets).

    python bench/consistency.py                        # the four bcts tiles as one scan
    python bench/consistency.py --quick                # only (a), 25 % thinning, 1.0 m cell (+ peers)
    python bench/consistency.py --files ../shared/data/autzen_trim.laz --crs EPSG:2992
    python bench/consistency.py --json rows.json       # also write every row
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
BCTS = sorted(DATA.glob("bcts_*.laz"))
PEERS = DATA / "peers"
CLASSES = [("<5", 0.0, 5.0), ("5-10", 5.0, 10.0), ("10-20", 10.0, 20.0), (">=20", 20.0, np.inf)]
NEAR = 1.5  # m: two tops closer than this are most likely one crown split in two
COLUMNS = [("label", "run", "{}", 34), ("trees", "trees", "{}", 6), ("stems_ha", "st/ha", "{:.0f}", 6),
           *[(f"ha {c[0]}", f"ha{c[0]}", "{:.0f}", 7) for c in CLASSES],
           ("trees_10", ">=10m", "{}", 6), ("change_10", "d>=10%", "{:+.1f}", 7),
           ("crown_p10", "crn10", "{:.1f}", 5), ("crown_p50", "crn50", "{:.1f}", 5), ("crown_p90", "crn90", "{:.1f}", 5),
           ("near_all", "nn<1.5", "{:.1%}", 7), ("near_10", "nn10<1.5", "{:.1%}", 8),
           ("min_height", "min h", "{:.2f}", 6), ("seconds", "s", "{:.1f}", 5)]


def thin(files: list[Path], fraction: float, outdir: Path, seed: int = 7) -> list[Path]:
    """Write copies of ``files`` keeping a random ``fraction`` of the pulses.

    A pulse is the set of points sharing a GPS time when the point format has one,
    otherwise the run of points starting at ``return_number == 1`` in file order.
    Every return of a kept pulse is kept; header scales, offsets and CRS VLRs are kept.

    Parameters
    ----------
    files : list of Path
    fraction : float
        Share of pulses kept, in (0, 1].
    outdir : Path
    seed : int
        Seed of the random choice (the same pulses for the same file and fraction).

    Returns
    -------
    list of Path
        The thinned LAZ files.
    """
    import laspy

    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for f in files:
        las = laspy.read(f)
        if "gps_time" in las.point_format.dimension_names:
            _, pulse = np.unique(np.asarray(las.gps_time), return_inverse=True)
        else:
            pulse = np.cumsum(np.asarray(las.return_number) == 1)
        keep = rng.random(int(pulse.max()) + 1) < fraction
        las.points = las.points[keep[pulse]]
        out.append(outdir / f"{Path(f).stem}.laz")
        las.write(out[-1])
    return out


def figures(label: str, xy: np.ndarray, height: np.ndarray, area_ha: float,
            diameter: np.ndarray | None = None, seconds: float | None = None) -> dict:
    """One row of figures for a set of tree tops.

    Parameters
    ----------
    label : str
    xy : (n, 2) array
        Tree top positions in the scan CRS.
    height : (n,) array
        Tree heights above ground.
    area_ha : float
        Footprint of the scan (ha).
    diameter : (n,) array, optional
        Crown diameters (absent for peers).
    seconds : float, optional
        Time of the run.

    Returns
    -------
    dict
        The row (``None`` where a figure does not apply).
    """
    from scipy.spatial import cKDTree

    n = len(xy)
    tall = height >= 10.0
    if n > 1:
        d, _ = cKDTree(xy).query(xy, k=2)
        near = d[:, 1] < NEAR  # another tree (of any height) closer than 1.5 m
    else:
        near = np.zeros(n, bool)
    row = {"label": label, "trees": n, "stems_ha": n / area_ha}
    for name, lo, hi in CLASSES:
        row[f"ha {name}"] = int(np.sum((height >= lo) & (height < hi))) / area_ha
    q = np.percentile(diameter, [10, 50, 90]) if diameter is not None and n else [None] * 3
    row.update(trees_10=int(tall.sum()), change_10=None, crown_p10=q[0], crown_p50=q[1], crown_p90=q[2],
               near_all=float(near.mean()) if n else None, near_10=float(near[tall].mean()) if tall.any() else None,
               min_height=float(height.min()) if n else None, under_2=int(np.sum(height < 2.0)), seconds=seconds)
    return row


def run_inventory(label: str, files: list[Path], work: Path, area_ha: float, crs=None, **kw) -> dict:
    """Inventory ``files`` (tiles 100 m, buffer 30 m, one job) and return its row of figures.

    Parameters
    ----------
    label : str
    files : list of Path
    work : Path
        A fresh output directory is made under it.
    area_ha : float
        Footprint of the scan (ha).
    crs : CRS-like, optional
        Override for files without a usable CRS.
    **kw
        Passed to ``inventory`` (``resolution``, ``metrics_resolution``).
    """
    from processes.lidar.pipeline import inventory

    t0 = time.perf_counter()
    s = inventory(files, work / label.replace(" ", "_"), crs=crs, tile_size=100, buffer=30, jobs=1, **kw)
    seconds = time.perf_counter() - t0
    trees = s["products"]["trees"]
    fc = trees if isinstance(trees, dict) else json.loads(Path(trees).read_text())
    feats = fc["features"]
    xy = np.array([f["geometry"]["coordinates"][:2] for f in feats], float).reshape(-1, 2)
    h = np.array([f["properties"]["height"] for f in feats], float)
    diam = np.array([f["properties"]["crown_diameter"] for f in feats], float)
    return figures(label, xy, h, area_ha, diam, seconds)


def peer_rows(area_ha: float) -> list[dict]:
    """One row per peer GeoJSON of tree tops (label = its workflow, from the file name)."""
    rows = []
    for p in sorted(PEERS.glob("*.geojson")):
        feats = json.loads(p.read_text())["features"]
        xy = np.array([f["geometry"]["coordinates"][:2] for f in feats], float).reshape(-1, 2)
        h = np.array([f["properties"]["height"] for f in feats], float)
        rows.append(figures("peer " + p.stem.removeprefix("bcts_"), xy, h, area_ha))
    return rows


def show(row: dict) -> None:
    """Print one row in the column layout of ``COLUMNS``."""
    cells = [(fmt.format(row[k]) if row.get(k) is not None else "-").rjust(w) if k != "label"
             else row[k].ljust(w) for k, _, fmt, w in COLUMNS]
    print(" ".join(cells), flush=True)


def acceptance(rows: list[dict]) -> None:
    """Print the acceptance figures, measured (the targets are in brackets)."""
    by = {r["label"]: r for r in rows}
    base = by["defaults"]
    print("\nacceptance (measured; targets in brackets):")
    lmf5 = next((r for r in rows if "lmf5" in r["label"]), None)
    lasr = next((r for r in rows if "lasR_tutorial" in r["label"]), None)
    if lmf5 and lasr:
        lo, hi = 0.8 * lmf5["trees"], 1.25 * lasr["trees"]
        print(f"  trees at defaults            {base['trees']:>7}   [{lo:.0f} .. {hi:.0f} = 0.8 x lidR lmf(5), 1.25 x lasR tutorial]")
    else:
        print(f"  trees at defaults            {base['trees']:>7}   [no peers for this scan]")
    t25 = by.get("thin 25%")
    print("  >=10 m change, thinned 25 %  " + (f"{t25['change_10']:>+6.1f}%" if t25 else "      -") + "   [|change| <= 15 %]")
    cells = [r for r in rows if r["label"].startswith("cell ")]
    if cells:
        worst = max(cells, key=lambda r: abs(r["change_10"]))
        print(f"  >=10 m change, forced cells  {worst['change_10']:>+6.1f}%   [<= 10 %; largest of "
              f"{', '.join(r['label'][5:] for r in cells)}, at {worst['label'][5:]}]")
    near = "-" if base["near_10"] is None else f"{base['near_10']:.1%}"
    print(f"  >=10 m trees, neighbour<1.5m {near:>7}   [<= 2 %]")
    print(f"  trees under 2 m              {base['under_2']:>7}   [0]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="*", type=Path, help="LAS/LAZ files of one scan (default: bcts_1..4)")
    ap.add_argument("--crs", help="CRS for files without a usable one (e.g. EPSG:2992)")
    ap.add_argument("--quick", action="store_true", help="only the defaults, 25 %% thinning and the 1.0 m cell")
    ap.add_argument("--json", type=Path, help="also write every row to this file")
    a = ap.parse_args()
    from processes.lidar.footprint import footprint

    files = [f.resolve() for f in a.files] if a.files else BCTS
    if not files:
        print("no files: pass --files (the bcts tiles are not present)")
        return
    is_bcts = files == BCTS
    area_ha = footprint(files, crs=a.crs)["area_m2"] / 10_000
    print(f"{len(files)} file(s), footprint {area_ha:.2f} ha; stems/ha columns are per height class (m)")
    print(" ".join(h.rjust(w) if k != "label" else h.ljust(w) for k, h, _, w in COLUMNS))
    fractions = [0.25] if a.quick else [0.5, 0.25, 0.1]
    cells = [1.0] if a.quick else [0.5, 0.75, 1.0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [("defaults", lambda: run_inventory("defaults", files, work, area_ha, a.crs))]
        for fr in fractions:
            label = f"thin {fr:.0%}"
            runs.append((label, lambda fr=fr, label=label: run_inventory(
                label, thin(files, fr, work / f"thin{fr}"), work, area_ha, a.crs)))
        for r in cells:
            extra = {"metrics_resolution": 15.0} if (20.0 / r) % 1 else {}  # metrics cell: a multiple of r
            label = f"cell {r:g} m"
            runs.append((label, lambda r=r, extra=extra, label=label: run_inventory(
                label, files, work, area_ha, a.crs, resolution=r, **extra)))
        for _, fn in runs:
            row = fn()
            base = rows[0]["trees_10"] if rows else row["trees_10"]
            row["change_10"] = 100.0 * (row["trees_10"] - base) / base if base else None
            rows.append(row)
            show(row)
    if is_bcts and PEERS.is_dir():
        for row in peer_rows(area_ha):
            base = rows[0]["trees_10"]
            row["change_10"] = 100.0 * (row["trees_10"] - base) / base if base else None
            rows.append(row)
            show(row)
    acceptance(rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
