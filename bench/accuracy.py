"""Accuracy benchmark: every accuracy figure x every forest x {engine, naive pipeline}.

Forests: the project's own simulator (open, dense, two-layer; hilly and steep terrain;
8 and 20 pulses/m²; one unclassified) and the independent family in
``../shared/data/truth`` (skipped when absent).  The engine runs ``inventory`` with
its defaults on the forest's LAZ file; the naive pipeline is a TIN DTM from class 2,
a max-binned 0.5 m CHM and fixed 5-cell local maxima (see
``processes.lidar.accuracy.naive_products``).  Figures only: never passes or fails.

    python bench/accuracy.py                    # every forest
    python bench/accuracy.py --only open dense  # forests whose name contains a word
    python bench/accuracy.py --json out.json    # also write the figures
    python bench/accuracy.py --bcts             # the real bcts tiles: stems/ha, crown sizes, close pairs
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TRUTH = ROOT.parent / "shared" / "data" / "truth"

# the project's own forests: (kind, terrain, pulses/m², classified, preset); "hard" uses
# synthetic.HARD (leaning stems, wavy outlines, pass-through crowns, a narrow beam), "rough"
# synthetic.ROUGH (whorls and branch tips, broadleaf leaders and gaps, saplings and herbs under
# 2 m: real crowns), the others are the milder regression cases
PROJECT_FORESTS = [
    ("open", "hilly", 20, True, ""), ("open", "flat", 8, True, ""),
    ("dense", "steep", 20, True, ""), ("dense", "steep", 20, False, ""), ("dense", "hilly", 8, True, ""),
    ("two_layer", "hilly", 20, True, ""),
    ("open", "hilly", 5, True, "hard"), ("dense", "steep", 30, True, "hard"), ("dense", "hilly", 8, False, "hard"),
    ("two_layer", "hilly", 12, True, "hard"),
    ("dense", "hilly", 5, True, "rough"), ("dense", "hilly", 8, True, "rough"), ("dense", "steep", 20, True, "rough"),
    ("open", "hilly", 5, True, "rough"), ("two_layer", "hilly", 8, True, "rough"), ("dense", "hilly", 1, True, "rough"),
]
COLUMNS = [("f1", "F1", "{:.3f}"), ("precision", "prec", "{:.3f}"), ("recall", "rec", "{:.3f}"),
           ("understory_recall", "under", "{:.2f}"), ("height_rmse", "h RMSE", "{:.2f}"),
           ("height_bias", "h bias", "{:+.2f}"), ("apex_rmse", "apexRMSE", "{:.2f}"), ("apex_bias", "apexbias", "{:+.2f}"),
           ("chm_rmse", "CHM RMSE", "{:.2f}"), ("chm_bias", "CHM bias", "{:+.2f}"), ("dtm_rmse", "DTM RMSE", "{:.3f}"),
           ("crown_iou", "crn IoU", "{:.2f}"), ("crown_area_error", "crn area", "{:+.2f}"),
           ("trees_found", "found", "{}"), ("trees_true", "true", "{}"), ("seconds", "s", "{:.1f}")]


def project_truths(workdir: Path, seed: int = 11):
    from processes.lidar.accuracy import from_simulation
    from processes.lidar.synthetic import HARD, ROUGH, make_forest, write_las

    presets = {"": {}, "hard": HARD, "rough": ROUGH}
    for kind, terrain, density, classified, preset in PROJECT_FORESTS:
        name = (f"{preset}-" if preset else "") + f"{kind}-{terrain}-d{density}" + ("" if classified else "-noclass")
        pts, truth = make_forest(kind, terrain=terrain, density=density, classified=classified, seed=seed, size=200.0,
                                 **presets[preset])
        truth.params["classified"] = classified
        path = write_las(workdir / f"{name}.laz", pts)
        yield from_simulation(name, truth, [path])


def shared_truths():
    from processes.lidar.accuracy import load_shared

    if TRUTH.is_dir():
        for d in sorted(p for p in TRUTH.iterdir() if (p / "truth.json").exists()):
            yield load_shared(d)


def bcts_figures(workdir: Path) -> None:
    """Over-segmentation on the real conifer tiles (no truth): stems/ha on the footprint,
    crown diameter quantiles and the share of trees whose nearest neighbour is closer than 1.5 m."""
    import numpy as np
    from scipy.spatial import cKDTree

    from processes.lidar.footprint import footprint
    from processes.lidar.pipeline import inventory

    files = sorted((ROOT.parent / "shared" / "data").glob("bcts_*.laz"))
    if len(files) < 4:
        print("bcts tiles not present")
        return
    s = inventory(files, workdir / "bcts", tile_size=100, buffer=30)
    feats = json.loads(Path(s["products"]["trees"]).read_text())["features"]
    xy = np.array([f["geometry"]["coordinates"] for f in feats])
    diam = np.array([f["properties"]["crown_diameter"] for f in feats])
    area_ha = footprint(files)["area_m2"] / 10_000
    d, _ = cKDTree(xy).query(xy, k=2)
    q = np.percentile(diam, [10, 50, 90])
    print(f"bcts: the run's summary says {s['stems_per_ha']:.0f} stems/ha on {s['area_ha']:.2f} ha (its footprint)")
    print(f"bcts: {len(xy)} trees on {area_ha:.2f} ha = {len(xy) / area_ha:.0f} stems/ha; crown diameter "
          f"p10/p50/p90 {q[0]:.1f}/{q[1]:.1f}/{q[2]:.1f} m; crowns under 1.5 m {np.mean(diam < 1.5):.1%}; "
          f"nearest neighbour < 1.5 m {np.mean(d[:, 1] < 1.5):.1%}; {s['points_per_second']:,.0f} points/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--no-dalponte", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bcts", action="store_true", help="only the real bcts figures")
    a = ap.parse_args()
    if a.bcts:
        with tempfile.TemporaryDirectory() as tmp:
            bcts_figures(Path(tmp))
        return
    from processes.lidar import Params, dalponte2016
    from processes.lidar.accuracy import engine_products, naive_products, score

    rows = []
    head = f"{'family':<12} {'forest':<30} {'pipeline':<8} " + " ".join(f"{c[1]:>8}" for c in COLUMNS)
    print(head)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for truth in [*project_truths(work), *shared_truths()]:
            if a.only and not any(w in truth.name for w in a.only):
                continue
            pipes = [("engine", lambda t: engine_products(t, work))]
            if not a.no_dalponte:  # the same with Dalponte 2016 crowns (the crown columns differ)
                pipes.append(("dalponte", lambda t: engine_products(t, work, Params(crowns=dalponte2016()))))
            if not a.no_naive:
                pipes.append(("naive", naive_products))
            for pname, fn in pipes:
                s = score(fn(truth), truth)
                rows.append({"family": truth.family, "forest": truth.name, "pipeline": pname, **s})
                cells = " ".join(f"{(c[2].format(s[c[0]]) if s.get(c[0]) is not None else '-'):>8}" for c in COLUMNS)
                print(f"{truth.family:<12} {truth.name:<30} {pname:<8} {cells}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
