"""CHM, tree detection and crowns against the known forest."""
from __future__ import annotations

import numpy as np
import pytest

from processes.lidar import crowns, errors, ground, surface, terrain, trees
from processes.lidar.grid import Grid

from .conftest import match_trees


def _normalised(pts):
    pts = ground.drop_noise(ground.classify_noise(pts, ground.ivf()))
    n = terrain.normalize_height(pts)
    return n.subset((n.z > -2) & (n.z < 90))


@pytest.fixture(scope="module")
def stands(forests):
    out = {}
    for kind in ("open", "dense", "two_layer"):
        pts, truth = forests(kind, "hilly", True)
        n = _normalised(pts)
        grid = Grid.covering(truth.bounds, 0.5)
        chm = surface.rasterize_canopy(n, grid=grid)
        out[kind] = (n, truth, grid, chm)
    return out


@pytest.mark.parametrize("kind", ["open", "dense", "two_layer"])
def test_pitfree_chm_rmse(stands, kind):
    n, truth, grid, chm = stands[kind]
    cx, cy = grid.centers()
    t = truth.canopy(cx, cy)
    sel = t > 2
    e = chm.data[sel] - t[sel]
    rmse = float(np.sqrt(np.nanmean(e**2)))
    naive = surface.rasterize_canopy(n, grid=grid, algorithm=surface.p2r()).data[sel] - t[sel]
    naive_rmse = float(np.sqrt(np.nanmean(naive**2)))
    print(f"CHM {kind}: pit-free RMSE {rmse:.2f} m (bias {np.nanmean(e):+.2f}); max-binned {naive_rmse:.2f} m")
    assert rmse < naive_rmse
    # two-layer: 1.62 m measured (1.10 m before the cliff fill, which takes the independent
    # family from 1.50-5.21 m to 0.86-1.54 m: see pitfree.fill and bench/accuracy.py)
    assert rmse <= (1.0 if kind != "two_layer" else 1.7)


def _detect(stand, algorithm=trees.lmf()):
    n, truth, grid, chm = stand
    det = trees.locate_trees(chm, algorithm)
    det["height"], det["apex_height"] = trees.tree_heights(n, det)
    return det


def _inner(truth, x, y, margin=5.0):
    b = truth.bounds
    return (x >= b[0] + margin) & (x < b[2] - margin) & (y >= b[1] + margin) & (y < b[3] - margin)


def _score(stand, det, ref_mask):
    n, truth, grid, chm = stand
    t = truth.trees
    d_in = _inner(truth, det["x"], det["y"])
    det = {k: v[d_in] for k, v in det.items()}
    ref = ref_mask & _inner(truth, t["x"], t["y"])
    r, c = match_trees(det["x"], det["y"], t["x"][ref], t["y"][ref])
    others = _inner(truth, t["x"], t["y"]) & ~ref
    rest = np.setdiff1d(np.arange(len(det["x"])), r)
    r2, c2 = match_trees(det["x"][rest], det["y"][rest], t["x"][others], t["y"][others])
    tp = len(r)
    fp = len(det["x"]) - tp - len(r2)  # a top matched to another (understory / hidden) tree is no false positive
    prec = tp / max(tp + fp, 1)
    rec = tp / max(ref.sum(), 1)
    f1 = 2 * prec * rec / max(prec + rec, 1e-9)
    herr = det["height"][r] - t["height"][ref][c]
    return f1, prec, rec, herr, len(r2) / max(others.sum(), 1)


@pytest.mark.parametrize("kind,target", [("open", 0.96), ("dense", 0.88), ("two_layer", 0.93)])
def test_tree_detection_f1_and_heights(stands, kind, target):
    n, truth, grid, chm = stands[kind]
    t = truth.trees
    ref = t["visible"] & ~t["understory"]
    f1, prec, rec, herr, other_recall = _score(stands[kind], _detect(stands[kind]), ref)
    all_f1 = _score(stands[kind], _detect(stands[kind]), ~t["understory"])[0]
    rmse, bias = float(np.sqrt(np.mean(herr**2))), float(np.mean(herr))
    print(f"trees {kind}: F1 {f1:.3f} (P {prec:.3f}, R {rec:.3f}; F1 on all stems incl. hidden {all_f1:.3f}); "
          f"height RMSE {rmse:.2f} m, bias {bias:+.2f} m")
    assert f1 >= target
    assert rmse <= 0.5 and abs(bias) <= 0.3
    if kind == "two_layer":
        u = t["understory"] & _inner(truth, t["x"], t["y"])
        print(f"trees two_layer: understory recall {other_recall:.3f} ({u.sum()} understory stems)")
        assert other_recall >= 0.40


def test_lmf_on_points_and_fixed_window():
    from processes.lidar.points import from_arrays

    x = np.array([0.0, 0.5, 5.0, 5.4, 10.0])
    y = np.zeros(5)
    z = np.array([10.0, 9.0, 12.0, 11.0, 1.0])
    tops = trees.locate_trees(from_arrays(x, y, z), trees.lmf(ws=3.0, hmin=2.0))
    assert sorted(tops["height"].tolist()) == [10.0, 12.0]


@pytest.mark.parametrize("algo", [crowns.watershed(), crowns.dalponte2016()])
def test_crowns_match_true_crown_areas(stands, algo):
    n, truth, grid, chm = stands["open"]
    det = _detect(stands["open"])
    labels = crowns.segment_crowns(chm, det, algo)
    area, diam = crowns.crown_stats(labels, grid.res, len(det["x"]))
    t = truth.trees
    r, c = match_trees(det["x"], det["y"], t["x"], t["y"])
    true_area = np.pi * t["crown_radius"][c] ** 2
    inner = _inner(truth, t["x"][c], t["y"][c], 10)
    rel = (area[r] - true_area) / true_area
    med = float(np.median(np.abs(rel[inner])))
    print(f"crowns {type(algo).__name__}: median |area error| {med:.1%}, median diameter {np.median(diam[r]):.1f} m")
    assert med < 0.25
    polys = crowns.crown_polygons(labels, grid)
    i = int(r[0])
    assert polys[i].area == pytest.approx(area[i], rel=1e-6)
    assert polys[i].contains(__import__("shapely").Point(det["x"][i], det["y"][i]))


def _cone(n=4000, apex=20.0, slope=4.0, seed=0):
    from processes.lidar.points import from_arrays

    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 30, n), rng.uniform(0, 30, n)
    z = np.clip(apex - slope * np.hypot(x - 15, y - 15), 0, None)
    return from_arrays(x, y, z)


def test_default_window_works_on_points_and_parameters_are_checked():
    tops = trees.locate_trees(_cone(), trees.lmf())
    best = int(np.argmax(tops["height"]))
    assert np.hypot(tops["x"][best] - 15, tops["y"][best] - 15) < 0.5 and tops["height"][best] > 18
    for bad in (dict(shape="triangle"), dict(hmin=-1), dict(ws=0), dict(ws=float("nan"))):
        with pytest.raises(errors.InvalidParameter):
            trees.lmf(**bad)
    with pytest.raises(errors.InvalidParameter):
        trees.crown_window(wmin=5, wmax=2)


def test_crown_window_widens_where_the_canopy_is_open():
    w = trees.crown_window()
    h = np.array([20.0, 20.0])
    open_, closed = w.diameter(h, np.array([0.3, 1.0]))
    assert closed == pytest.approx(2.0) and open_ == pytest.approx(2.0 + 0.4 * 0.7 * 20)


def test_apex_height_is_closer_to_the_apex_than_the_highest_return():
    """30 cones at 10 points/m²: the nearest return lands ~0.16 m from the apex, ~0.6 m lower."""
    top = {"x": np.array([15.0]), "y": np.array([15.0]), "height": np.array([0.0])}
    high, apex = [], []
    for seed in range(30):
        pts = _cone(n=9000, seed=seed)
        h, a = trees.tree_heights(pts, top)
        high.append(h[0] - 20.0)
        apex.append(a[0] - 20.0)
    high, apex = np.array(high), np.array(apex)
    print(f"cones: highest return bias {high.mean():+.2f} m, apex bias {apex.mean():+.2f} m")
    assert high.mean() < -0.4
    assert abs(apex.mean()) < 0.5 * abs(high.mean())
    assert np.sqrt(np.mean(apex**2)) < np.sqrt(np.mean(high**2))
    assert (apex >= high).all()


def test_two_tops_closer_than_min_distance_are_one_tree():
    from processes.lidar.grid import Raster

    g = Grid(0.0, 20.0, 0.5, 40, 40)
    cx, cy = g.centers()
    # two cones 1.2 m apart (one crown with two leaders) and one 6 m away
    z = np.maximum.reduce([15 - 3 * np.hypot(cx - 8, cy - 10), 14.5 - 3 * np.hypot(cx - 9.2, cy - 10),
                           13 - 3 * np.hypot(cx - 14, cy - 10), np.zeros(g.shape)])
    chm = Raster(z.astype(np.float32), g, "chm")
    narrow = trees.lmf(ws=1.0, crown_share=0)  # min_distance alone
    assert len(trees.locate_trees(chm, trees.lmf(ws=1.0, min_distance=0, crown_share=0))["x"]) == 3
    tops = trees.locate_trees(chm, narrow)
    assert sorted(np.round(tops["x"]).tolist()) == [8.0, 14.0]  # the higher leader and the other tree


@pytest.mark.parametrize("apart, found", [(1.6, 1), (2.3, 2)])
def test_two_tall_tops_closer_than_a_tenth_of_their_height_are_one_tree(apart, found):
    from processes.lidar.grid import Raster

    g = Grid(0.0, 20.0, 0.25, 80, 80)
    cx, cy = g.centers()
    # two 20 m leaders `apart` metres apart: one crown under 2 m (0.1 x 20 m), two trees beyond
    z = np.maximum.reduce([20 - 4 * np.hypot(cx - 9, cy - 10), 19.8 - 4 * np.hypot(cx - 9 - apart, cy - 10),
                           np.zeros(g.shape)])
    chm = Raster(z.astype(np.float32), g, "chm")
    assert len(trees.locate_trees(chm, trees.lmf(ws=1.0))["x"]) == found
    assert len(trees.locate_trees(chm, trees.lmf(ws=1.0, crown_share=0))["x"]) == 2


@pytest.mark.parametrize("res", [0.5, 0.75, 1.0])
def test_the_window_reaches_the_same_metres_at_any_cell(res):
    # a 3 m window reaches 1.5 m and no cell of it lies farther, whatever the cell (rounded to
    # odd cells the reach of a 2.5 m window was 1.0, 0.75 and 1.0 m at these cells)
    reach = trees._reach_cells(3.0, np.array([10.0]), res)
    assert reach[0] * res == pytest.approx(1.5)
    fp = trees._footprint(float(reach[0]), "circular")
    r = fp.shape[0] // 2
    yy, xx = np.nonzero(fp)
    assert np.max(np.hypot(yy - r, xx - r)) * res <= 1.5 + 1e-9


def test_no_published_tree_is_lower_than_hmin(tmp_path):
    """Bare ground with low shrubs and a few trees: nothing under hmin is a tree."""
    import json

    from processes.lidar.pipeline import inventory
    from processes.lidar.synthetic import make_forest, write_las

    pts, truth = make_forest("open", size=60.0, density=2.0, terrain="steep", shrubs=0.4, seed=3)
    s = inventory([write_las(tmp_path / "s.laz", pts)], tmp_path / "out", tile_size=20.0, buffer=20.0)
    h = np.array([f["properties"]["height"] for f in json.loads(open(s["products"]["trees"]).read())["features"]])
    assert len(h) and h.min() >= trees.lmf().hmin
    # per-ha figures on the footprint (2 m cells holding a point), not on the 0.5 m cells of a sparse scan
    assert s["area_ha"] == pytest.approx(0.36, rel=0.03)


@pytest.mark.parametrize("first_density, metrics_res, cell", [(12.0, 20.0, 0.5), (4.0, 20.0, 0.5), (2.0, 20.0, 0.8),
                                                              (2.0, 10.0, 1.0), (1.0, 20.0, 1.0), (0.3, 20.0, 1.0),
                                                              (0.05, 7.5, 0.9375)])
def test_most_chm_cells_hold_a_first_return(first_density, metrics_res, cell):
    assert surface.chm_cell(first_density, metrics_res) == cell


@pytest.mark.parametrize("density, cell", [(20.0, 0.5), (0.8, 1.0)])
def test_a_run_picks_the_chm_cell_from_the_scan_and_records_it(tmp_path, density, cell):
    import rasterio

    from processes.lidar.pipeline import inventory
    from processes.lidar.synthetic import make_forest, write_las

    pts, _ = make_forest("open", size=60.0, density=density, seed=4)
    s = inventory([write_las(tmp_path / "s.laz", pts)], tmp_path / "out", tile_size=60.0, buffer=20.0)
    assert s["params"]["chm_res"] == cell and s["resolutions"]["chm"] == cell
    with rasterio.open(s["products"]["chm"]) as ds:
        assert ds.res == pytest.approx((cell, cell))
    forced = inventory([tmp_path / "s.laz"], tmp_path / "forced", tile_size=60.0, buffer=20.0, resolution=0.8)
    assert forced["params"]["chm_res"] == 0.8
