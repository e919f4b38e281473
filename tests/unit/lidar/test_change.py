"""Change between two acquisitions (processes/lidar/change.py).

The truth test: a simulated forest, and a copy of it a few years on in which every tree
grew (height +0.3–1.0 m, crown in proportion) and the trees standing in known polygons
were felled. Both are scanned (fresh pulses and noise each), the engine runs its full
inventory on each scan, and the comparison must find the canopy area really lost within
5 % and the median height growth of the matched trees within 0.2 m — on three stand
families (open, dense, and a two-layer stand with the simulator's HARD settings), so the
defaults are not tuned to one. A forest of the independent truth family
(../shared/data/truth) goes through the engine too, with a harvest cut into its CHM.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.transform import Affine

from processes.lidar import change
from processes.lidar.change import GAINED, LOST, NODATA, OPEN, STABLE, ChangeParams
from processes.lidar.cog import read_raster
from processes.lidar.errors import IncompatibleInputs, InvalidParameter
from processes.lidar.grid import Grid
from processes.lidar.pipeline import inventory
from processes.lidar.synthetic import HARD, make_forest, write_las


def regrow(trees: dict, rng, harvest: list[shapely.Polygon]) -> tuple[dict, np.ndarray, np.ndarray]:
    """The trees a few years on: every tree taller by 0.3–1.0 m, its crown (radius, length,
    lean) scaled with its height; the trees whose stem stands in ``harvest`` felled.
    Returns the new trees, the true growth of the kept trees and the felled mask."""
    n = len(trees["x"])
    growth = rng.uniform(0.3, 1.0, n)
    felled = np.zeros(n, bool)
    for poly in harvest:
        felled |= shapely.contains_xy(poly, trees["x"], trees["y"])
    out = {k: np.asarray(v).copy() for k, v in trees.items() if k != "visible"}
    scale = (out["height"] + growth) / out["height"]
    out["height"] = out["height"] + growth
    for k in ("crown_radius", "crown_length", "lean_dx", "lean_dy"):
        out[k] = out[k] * scale
    return {k: v[~felled] for k, v in out.items()}, growth[~felled], felled


def _engine_run(points, folder) -> tuple[np.ndarray, Affine, dict]:
    """Full inventory of a scan; its CHM and trees as compare() takes them."""
    folder.mkdir()
    write_las(folder / "scan.laz", points)
    s = inventory([folder / "scan.laz"], folder / "out", metrics_resolution=20)
    chm, meta = read_raster(s["products"]["chm"])
    feats = json.loads(open(s["products"]["trees"]).read())["features"]
    xy = np.array([f["geometry"]["coordinates"][:2] for f in feats], float).reshape(-1, 2)
    trees = {"x": xy[:, 0], "y": xy[:, 1], "height": np.array([f["properties"]["height"] for f in feats], float),
             "crown_radius": np.array([(f["properties"].get("crown_diameter") or np.nan) / 2 for f in feats], float)}
    return chm[0], meta["transform"], trees


FAMILIES = {
    # stand, terrain, forest seed, harvest polygons (offsets from the plot's corner, m)[, simulator settings]
    "open-hilly": ("open", "hilly", 3, [[(20, 15), (55, 10), (60, 45), (25, 50)]]),
    "dense-flat": ("dense", "flat", 4, [[(10, 60), (40, 60), (40, 85), (10, 85)],
                                        [(60, 10), (85, 20), (75, 40), (55, 30)]]),
    # leaning stems, wavy outlines, pass-through crowns, a narrow beam; understory exposed by the felling
    "two_layer-hilly-hard": ("two_layer", "hilly", 7, [[(20, 15), (55, 10), (60, 45), (25, 50)],
                                                       [(60, 60), (90, 65), (85, 90), (62, 85)]], HARD),
}


def simulate_change(kind: str, terrain: str, seed: int, polys: list, settings: dict | None = None,
                    size: float = 100.0, params: ChangeParams = ChangeParams()) -> dict:
    """Two scans of one forest: ``before`` and ``after`` (grown, the trees in ``polys`` felled),
    with the true canopy area lost — canopy (>= hmin) whose true surface fell by more than
    ``drop``, on a 0.25 m grid — and the true growth of the kept trees. ``settings``: more
    simulator settings (``synthetic.HARD``)."""
    settings = settings or {}
    _, forest = make_forest(kind, size=size, seed=seed, terrain=terrain, **settings)
    ox, oy = forest.bounds[:2]
    harvest = [shapely.Polygon([(ox + dx, oy + dy) for dx, dy in p]) for p in polys]
    later, growth, felled = regrow(forest.trees, np.random.default_rng(seed + 100), harvest)
    pts_b, truth_b = make_forest(kind, size=size, seed=seed + 1000, terrain=terrain, trees=forest.trees, **settings)
    pts_a, truth_a = make_forest(kind, size=size, seed=seed + 2000, terrain=terrain, trees=later, **settings)
    fine = Grid(ox, oy + size, 0.25, int(size / 0.25), int(size / 0.25))
    cx, cy = fine.centers()
    zb, za = truth_b.canopy(cx, cy), truth_a.canopy(cx, cy)
    true_lost = float(np.count_nonzero((zb >= params.hmin) & (za - zb <= -params.drop)) * 0.25**2)
    return dict(before=pts_b, after=pts_a, true_lost=true_lost, growth=growth, felled=felled,
                harvest_area=sum(h.area for h in harvest), size=size)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def scans(request, tmp_path_factory):
    sim = simulate_change(*FAMILIES[request.param])
    d = tmp_path_factory.mktemp(f"change-{request.param}")
    before, after = _engine_run(sim["before"], d / "before"), _engine_run(sim["after"], d / "after")
    result = change.compare(*before[:2], *after[:2], before[2], after[2], ChangeParams())
    return dict(sim, name=request.param, result=result)


def test_harvested_area_within_5_percent(scans):
    r, true_lost = scans["result"], scans["true_lost"]
    found = r.areas["canopy_lost"]["m2"]
    err = found / true_lost - 1
    print(f"\n{scans['name']}: canopy lost {found:.1f} m² (cells {r.areas['canopy_lost']['m2_cells']:.1f}) vs true "
          f"{true_lost:.1f} m² ({100 * err:+.1f} %); harvest polygons {scans['harvest_area']:.0f} m², "
          f"{int(scans['felled'].sum())} trees felled; canopy gained {r.areas['canopy_gained']['m2']:.1f} m²")
    assert true_lost > 300
    assert abs(err) <= 0.05
    # nothing grew into new canopy, and every cell is classified
    assert r.areas["canopy_gained"]["m2"] < 0.02 * true_lost
    assert r.areas["nodata"]["cells"] < 1e-3 * r.classes.size      # a corner cell without a return, at most
    assert sum(a["cells"] for a in r.areas.values()) == r.classes.size == scans["size"] ** 2 / 0.25


def test_median_growth_of_matched_trees_within_02(scans):
    t, truth = scans["result"].trees, float(np.median(scans["growth"]))
    print(f"\n{scans['name']}: median growth {t['growth_median']:.3f} m vs true {truth:.3f} m "
          f"(mean {t['growth_mean']:.3f}, IQR {t['growth_q25']:.2f}–{t['growth_q75']:.2f}); trees "
          f"{t['before']} -> {t['after']}, matched {t['matched']}, lost {t['lost']}, new {t['new']}; "
          f"truly felled {int(scans['felled'].sum())}")
    assert abs(t["growth_median"] - truth) <= 0.2
    assert t["matched"] >= 0.75 * t["after"]
    # felled trees are lost trees: at least as many trees lost as were felled, give or take detection noise
    # (two-layer hard stand: 48 of 61 since issue 29's wider windows in metres, 0.79)
    assert t["lost"] >= 0.75 * scans["felled"].sum()


# --- the pure functions on small arrays --------------------------------------------------------------------


def test_align_takes_the_overlap_of_two_grids_on_one_lattice():
    a = np.arange(100, dtype=float).reshape(10, 10)
    ta = Affine(0.5, 0, 100.0, 0, -0.5, 205.0)
    b = np.arange(64, dtype=float).reshape(8, 8) + 1000
    tb = Affine(0.5, 0, 102.0, 0, -0.5, 203.0)          # 4 cells east, 4 cells south
    x, y, t = change.align(a, ta, b, tb)
    assert t == Affine(0.5, 0, 102.0, 0, -0.5, 203.0)
    assert x.shape == y.shape == (6, 6)
    assert x[0, 0] == a[4, 4] and y[0, 0] == b[0, 0] and x[-1, -1] == a[9, 9] and y[-1, -1] == b[5, 5]


def test_align_resamples_a_finer_or_shifted_grid_bilinearly():
    yy, xx = np.mgrid[0:40, 0:40]
    plane = lambda col, row, res, x0, y0: 2.0 * (x0 + (col + 0.5) * res) + 3.0 * (y0 - (row + 0.5) * res)
    a = plane(xx[:20, :20], yy[:20, :20], 1.0, 0.0, 20.0)
    b = plane(xx, yy, 0.5, 0.25, 19.75)                   # finer and shifted by a quarter cell
    x, y, t = change.align(a, Affine(1, 0, 0, 0, -1, 20), b, Affine(0.5, 0, 0.25, 0, -0.5, 19.75))
    assert t.a == 1.0 and t.c == 1.0 and t.f == 19.0      # the coarser grid's lattice, inside the overlap
    np.testing.assert_allclose(y, x, atol=1e-6)           # a plane is sampled exactly by bilinear interpolation


def test_align_refuses_disjoint_grids_and_rotated_ones():
    with pytest.raises(IncompatibleInputs):
        change.align(np.zeros((4, 4)), Affine(1, 0, 0, 0, -1, 4), np.zeros((4, 4)), Affine(1, 0, 10, 0, -1, 4))
    with pytest.raises(InvalidParameter):
        change.align(np.zeros((4, 4)), Affine(1, 0.1, 0, 0, -1, 4), np.zeros((4, 4)), Affine(1, 0, 0, 0, -1, 4))


def test_change_classes_keep_a_felled_crown_and_drop_noise():
    rng = np.random.default_rng(0)
    before = np.full((80, 80), 20.0) + rng.normal(0, 0.2, (80, 80))
    before[:, 60:] = 0.5                                   # open ground on the east
    after = before + 0.8 + rng.normal(0, 0.2, (80, 80))   # everything grew
    after[:, 60:] = 0.5
    yy, xx = np.mgrid[0:80, 0:80]
    # a 5 m radius crown at 0.5 m cells, in a CHM of the highest return per cell: every cell it touches
    near = lambda v: np.maximum(np.abs(v + 0.5 - 30.0) - 0.5, 0.0)
    felled = near(yy) ** 2 + near(xx) ** 2 <= 10 ** 2
    after[felled] = 0.3
    after[5, 5] = 10.0                                     # one deep pit: noise
    after[50, 10:40] = 12.0                                # a one-cell line (a crown-edge artefact)
    after[2:4, 62:64] = 9.0                                # a 1 m² bump in the open: not gained canopy
    cls = change.change_classes(before, after, 0.5)
    assert cls[30, 30] == LOST and cls[5, 5] != LOST and not (cls[50, 10:40] == LOST).any()
    assert not (cls == GAINED).any() and cls[10, 70] == OPEN and cls[70, 10] == change.GROWTH
    areas = change.class_areas(cls, 0.5)
    true = np.pi * 5 ** 2
    assert areas["canopy_lost"]["m2_cells"] == felled.sum() * 0.25
    # every touched cell is the most a max-CHM can overstate; half outlines bring it to +5 % (cells: +15 %)
    assert areas["canopy_lost"]["m2_cells"] / true - 1 > 0.14
    assert abs(areas["canopy_lost"]["m2"] / true - 1) <= 0.055
    assert cls[3, 63] == STABLE                               # above hmin, too small to be gained canopy
    assert areas["no_canopy"]["m2"] == (20 * 80 - 4) * 0.25
    nan = before.copy()
    nan[0, 0] = np.nan
    assert change.change_classes(nan, after, 0.5)[0, 0] == NODATA


def test_pair_trees_is_one_to_one_and_optimal():
    # a greedy nearest-neighbour pass would give b0 to a0 and leave a1 unmatched
    xa, ya = np.array([0.0, 1.2]), np.array([0.0, 0.0])
    xb, yb = np.array([0.7, -0.6]), np.array([0.0, 0.0])
    h = np.array([20.0, 20.0])
    ia, ib = change.pair_trees(xa, ya, h, xb, yb, h + 0.5)
    assert ia.tolist() == [0, 1] and ib.tolist() == [1, 0]
    # too far (match_min 1 m without crowns, 0.5 x 4 m = 2 m with them) or too different in height
    far = change.pair_trees(xa[:1], ya[:1], h[:1], xa[:1] + 1.5, ya[:1], h[:1])
    assert len(far[0]) == 0
    near = change.pair_trees(xa[:1], ya[:1], h[:1], xa[:1] + 1.5, ya[:1], h[:1], np.array([4.0]), np.array([4.0]))
    assert near[0].tolist() == [0]
    assert len(change.pair_trees(xa, ya, h, xa, ya, h - 6)[0]) == 0


def test_pair_trees_scales_and_stats_count_lost_and_new():
    rng = np.random.default_rng(1)
    n = 20000
    x, y = rng.uniform(0, 2000, n), rng.uniform(0, 2000, n)
    h = rng.uniform(10, 30, n)
    keep = rng.random(n) > 0.1
    xb, yb = x[keep] + rng.normal(0, 0.2, keep.sum()), y[keep] + rng.normal(0, 0.2, keep.sum())
    hb = h[keep] + 0.6
    pairs = change.pair_trees(x, y, h, xb, yb, hb, np.full(n, 2.5), np.full(keep.sum(), 2.6))
    assert (np.flatnonzero(keep)[pairs[1]] == pairs[0]).mean() > 0.99
    s = change.growth_stats(h, hb, pairs)
    assert s["matched"] == len(pairs[0]) and s["lost"] == n - s["matched"] and s["new"] == keep.sum() - s["matched"]
    assert abs(s["growth_median"] - 0.6) < 1e-9


def test_params_are_validated():
    with pytest.raises(InvalidParameter):
        ChangeParams(drop=0)
    with pytest.raises(InvalidParameter):
        ChangeParams(hmin=float("nan"))
    with pytest.raises(InvalidParameter):
        ChangeParams(match_min=4, match_max=3)
    assert ChangeParams().to_dict()["hmin"] == 5.0


# --- the independent truth family: its scan through the engine, a harvest cut into its CHM ----------------

SHARED_FOREST = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "truth" / "dense-moderate-d8"


@pytest.fixture(scope="module")
def shared_change(tmp_path_factory):
    if not (SHARED_FOREST / "scan.laz").exists():
        pytest.skip("../shared/data/truth is not present")
    return simulate_shared_change(tmp_path_factory.mktemp("change-shared"))


def simulate_shared_change(out: Path, params: ChangeParams = ChangeParams()) -> dict:
    """The engine's CHM and trees of an independent forest (another simulator, dense stand, 8 pulses/m²),
    and an 'after' made from them: every tree taller by 0.3–1.0 m (its CHM cells too, by Voronoi
    cell of the tops), its top detected 0.3 m off; two polygons felled (cells to 0–0.5 m slash)."""
    from scipy.spatial import cKDTree

    from processes.lidar.accuracy import load_shared

    truth = load_shared(SHARED_FOREST)
    s = inventory(truth.files, out, metrics_resolution=20)
    chm, meta = read_raster(s["products"]["chm"])
    chm, t = chm[0], meta["transform"]
    feats = json.loads(open(s["products"]["trees"]).read())["features"]
    xy = np.array([f["geometry"]["coordinates"][:2] for f in feats], float)
    trees = {"x": xy[:, 0], "y": xy[:, 1], "height": np.array([f["properties"]["height"] for f in feats], float),
             "crown_radius": np.array([f["properties"]["crown_diameter"] / 2 for f in feats], float)}
    rng = np.random.default_rng(17)
    x0, y0 = truth.bounds[:2]
    harvest = [shapely.Polygon([(x0 + dx, y0 + dy) for dx, dy in p]) for p in
               ([(30, 40), (85, 35), (90, 80), (35, 90)], [(120, 120), (165, 130), (150, 170), (115, 160)])]
    growth = rng.uniform(0.3, 1.0, len(xy))
    rows, cols = np.mgrid[0:chm.shape[0], 0:chm.shape[1]]
    cx, cy = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
    owner = cKDTree(xy).query(np.column_stack([cx.ravel(), cy.ravel()]))[1].reshape(chm.shape)
    after = np.where(chm >= 2, chm + growth[owner], chm) + rng.normal(0, 0.1, chm.shape)
    felled_cells = np.zeros(chm.shape, bool)
    felled = np.zeros(len(xy), bool)
    for poly in harvest:
        felled_cells |= shapely.contains_xy(poly, cx, cy)
        felled |= shapely.contains_xy(poly, xy[:, 0], xy[:, 1])
    after[felled_cells] = rng.uniform(0, 0.5, felled_cells.sum())
    later = {"x": xy[~felled, 0] + rng.normal(0, 0.3, (~felled).sum()),
             "y": xy[~felled, 1] + rng.normal(0, 0.3, (~felled).sum()),
             "height": trees["height"][~felled] + growth[~felled] + rng.normal(0, 0.1, (~felled).sum()),
             "crown_radius": trees["crown_radius"][~felled] * 1.03}
    # the truth: the independent simulator's canopy (cell centres, 0.5 m) above hmin inside the polygons
    tc = truth.chm
    gx, gy = tc.grid.centers()
    inside = np.zeros(tc.data.shape, bool)
    for poly in harvest:
        inside |= shapely.contains_xy(poly, gx, gy)
    true_lost = float(np.count_nonzero(inside & (tc.data >= params.hmin)) * tc.grid.res ** 2)
    result = change.compare(chm, t, after, t, trees, later, params)
    return dict(result=result, true_lost=true_lost, growth=growth[~felled], felled=felled,
                inputs=(chm, t, after, t, trees, later))


def test_shared_forest_harvest_and_growth(shared_change):
    r, true_lost = shared_change["result"], shared_change["true_lost"]
    found = r.areas["canopy_lost"]["m2"]
    err = found / true_lost - 1
    t, truth = r.trees, float(np.median(shared_change["growth"]))
    print(f"\n{SHARED_FOREST.name} (CHM harvest): canopy lost {found:.1f} m² (cells "
          f"{r.areas['canopy_lost']['m2_cells']:.1f}) vs true {true_lost:.1f} m² ({100 * err:+.1f} %); median growth "
          f"{t['growth_median']:.3f} m vs {truth:.3f} m; matched {t['matched']} of {t['after']}, lost {t['lost']} "
          f"(felled {int(shared_change['felled'].sum())}), new {t['new']}")
    assert true_lost > 1000
    assert abs(err) <= 0.05
    assert abs(t["growth_median"] - truth) <= 0.2
    assert t["matched"] >= 0.95 * t["after"] and abs(t["lost"] - shared_change["felled"].sum()) <= 0.05 * t["before"]


def test_write_products_gives_valid_cogs(tmp_path):
    from processes.lidar.cog import validate_cog
    import rasterio

    before = np.full((300, 300), 20.0)
    after = before + 0.7
    after[100:160, 100:160] = 0.2
    before[0, :] = np.nan
    r = change.compare(before, Affine(0.5, 0, 500000, 0, -0.5, 5400150), after, Affine(0.5, 0, 500000, 0, -0.5, 5400150),
                       {"x": np.array([500010.0]), "y": np.array([5400100.0]), "height": np.array([20.0])},
                       {"x": np.array([500010.2]), "y": np.array([5400100.0]), "height": np.array([20.7])})
    paths = change.write_products(r, tmp_path, "EPSG:32610")
    for path in paths.values():
        ok, errors, warnings = validate_cog(path)
        assert ok and not errors and not warnings, (errors, warnings)
    with rasterio.open(paths["change"]) as ds:
        cls = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0 and ds.tags(1)["units"] == "class"
        assert ds.transform == r.transform and ds.crs.to_epsg() == 32610
        # a colour table (what GDAL and QGIS draw it with) and the class names
        assert ds.colorinterp[0].name == "palette" and ds.colormap(1)[LOST] == change.CLASS_COLORS[LOST]
        assert ds.colormap(1)[NODATA][3] == 0
        assert json.loads(ds.tags(1)["classes"]) == {str(k): v for k, v in change.CLASSES.items() if k != NODATA}
    np.testing.assert_array_equal(cls, r.classes)
    assert (cls[0] == NODATA).all() and (cls[102:158, 102:158] == LOST).all()   # the opening rounds corners
    with rasterio.open(paths["chm_diff"]) as ds:
        diff = ds.read(1, masked=True)
    assert diff.mask[0].all() and abs(float(diff[130, 130]) + 19.8) < 1e-5 and abs(float(diff[250, 250]) - 0.7) < 1e-5
    assert r.trees["matched"] == 1 and abs(r.trees["growth_median"] - 0.7) < 1e-9
