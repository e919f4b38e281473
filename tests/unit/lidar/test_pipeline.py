"""The streaming pipeline: tiles equal the whole scan, outputs are valid, progress and cancel work."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import shapely

from processes.lidar import errors
from processes.lidar.cog import read_raster, validate_cog, write_cog
from processes.lidar.grid import Grid
from processes.lidar.footprint import footprint
from processes.lidar.metrics import METRIC_NAMES
from processes.lidar import (Params, inventory, load_tile_result, merge_tile_results, plan_tiles, polygon_metrics,
                             process_tile, read_tile, run, save_tile_result)
from processes.lidar.trees import lmf
from processes.lidar.points import Points
from processes.lidar.read import open_scan
from processes.lidar.synthetic import make_forest, write_las

from .conftest import BCTS, match_trees

RASTERS = ("dtm", "chm", "grid_metrics")


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    """A 120 m forest split into four files (tiles of a delivery) plus the same as one file."""
    pts, truth = make_forest("dense", size=120.0, seed=11)
    d = tmp_path_factory.mktemp("scan")
    whole = write_las(d / "whole.laz", pts)
    parts = []
    ox, oy = truth.bounds[:2]
    for i, (qx, qy) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        m = ((pts.x - ox) // 60 == qx) & ((pts.y - oy) // 60 == qy)
        parts.append(write_las(d / f"part_{i}.laz", pts.subset(m)))
    return whole, parts, pts, truth


@pytest.fixture(scope="module")
def runs(scan_files, tmp_path_factory):
    whole, parts, pts, truth = scan_files
    out = {}
    calls = []
    d = tmp_path_factory.mktemp("runs")
    t = time.perf_counter()
    out["tiled"] = inventory(parts, d / "tiled", tile_size=40, buffer=20, metrics_resolution=20,
                             progress=lambda p, m: calls.append((p, m)))
    out["tiled_time"] = time.perf_counter() - t
    out["whole"] = inventory([whole], d / "whole", tile_size=1000, buffer=20, metrics_resolution=20)
    out["parallel"] = inventory(parts, d / "parallel", tile_size=40, buffer=20, metrics_resolution=20, jobs=2)
    out["calls"] = calls
    return out


def test_inventory_writes_every_product(runs):
    s = runs["tiled"]
    for key in ("dtm", "chm", "grid_metrics", "trees", "crowns", "metrics"):
        assert s["products"][key]
    assert s["tiles"] >= 9 and s["tree_count"] > 100
    for key in RASTERS:
        ok, errs, _ = validate_cog(s["products"][key])
        assert ok, errs
    data, meta = read_raster(s["products"]["grid_metrics"])
    assert meta["band_names"] == METRIC_NAMES and data.shape[0] == len(METRIC_NAMES)
    assert meta["crs"].to_epsg() == 32610 and meta["nodata"] == -9999.0
    with rasterio.open(s["products"]["grid_metrics"]) as ds:
        units = {name: ds.tags(i + 1)["units"] for i, name in enumerate(ds.descriptions)}
    assert units["zmax"] == "metre" and units["cover"] == "percent" and units["n"] == "count"
    js = json.loads(open(s["products"]["metrics"]).read())
    assert js["tree_count"] == s["tree_count"] and 0 < js["canopy_cover"] <= 1
    trees = json.loads(open(s["products"]["trees"]).read())
    crowns = json.loads(open(s["products"]["crowns"]).read())
    assert len(trees["features"]) == s["tree_count"] == len(crowns["features"])
    f = trees["features"][0]
    assert f["geometry"]["type"] == "Point" and f["properties"]["height"] > 2
    poly = shapely.geometry.shape(crowns["features"][0]["geometry"])
    assert poly.is_valid and poly.area > 0
    print(f"inventory of {s['point_count']:,} points in {runs['tiled_time']:.1f} s "
          f"({s['point_count'] / runs['tiled_time']:,.0f} points/s, 9 tiles)")


def test_tiles_equal_whole_scan(runs):
    a, b = runs["tiled"], runs["whole"]
    for key in RASTERS:
        x, _ = read_raster(a["products"][key])
        y, _ = read_raster(b["products"][key])
        assert x.shape == y.shape
        assert (np.isnan(x) == np.isnan(y)).all(), key
        diff = np.nanmax(np.abs(x - y))
        print(f"{key}: max |tiled - whole| = {diff:.2e}")
        assert diff <= 1e-6, key
    ta = json.loads(open(a["products"]["trees"]).read())["features"]
    tb = json.loads(open(b["products"]["trees"]).read())["features"]
    pa = np.array([f["geometry"]["coordinates"] for f in ta])
    pb = np.array([f["geometry"]["coordinates"] for f in tb])
    assert len(pa) == len(pb)
    r, c = match_trees(pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1], max_dist=1e-6)
    assert len(r) == len(pa)  # same set: found once, not twice or never
    assert a["canopy_cover"] == pytest.approx(b["canopy_cover"], abs=1e-12)


def test_tiles_on_two_processes_give_identical_products(runs):
    a, b = runs["tiled"], runs["parallel"]
    for key in RASTERS:
        x, _ = read_raster(a["products"][key])
        y, _ = read_raster(b["products"][key])
        assert np.array_equal(x, y, equal_nan=True), key
    for key in ("trees", "crowns"):
        assert open(a["products"][key]).read() == open(b["products"][key]).read()  # same ids, same order
    assert b["tree_count"] == a["tree_count"] > 100


def test_trees_of_the_pipeline_match_truth(runs, scan_files):
    _, _, _, truth = scan_files
    feats = json.loads(open(runs["tiled"]["products"]["trees"]).read())["features"]
    p = np.array([f["geometry"]["coordinates"] for f in feats])
    t = truth.trees
    b = truth.bounds
    inner = lambda x, y: (x > b[0] + 5) & (x < b[2] - 5) & (y > b[1] + 5) & (y < b[3] - 5)
    ref = t["visible"] & inner(t["x"], t["y"])
    det = inner(p[:, 0], p[:, 1])
    r, c = match_trees(p[det, 0], p[det, 1], t["x"][ref], t["y"][ref])
    r2, _ = match_trees(np.delete(p[det, 0], r), np.delete(p[det, 1], r), t["x"][~ref], t["y"][~ref])
    prec = len(r) / max(det.sum() - len(r2), 1)
    rec = len(r) / ref.sum()
    f1 = 2 * prec * rec / (prec + rec)
    print(f"pipeline trees (dense, 4 files, 9 tiles): F1 {f1:.3f}")
    assert f1 >= 0.88


def test_progress_reported_and_monotonic(runs):
    pcts = [p for p, _ in runs["calls"]]
    assert len(pcts) > 5 and pcts[-1] == 100
    assert all(b >= a for a, b in zip(pcts, pcts[1:]))
    assert all(isinstance(m, str) for _, m in runs["calls"])


def test_cancel_from_the_callback_propagates(scan_files, tmp_path):
    class Cancelled(Exception):
        pass

    def cb(pct, msg):
        if pct > 30:
            raise Cancelled()

    for jobs in (1, 2):
        with pytest.raises(Cancelled):
            inventory(scan_files[1], tmp_path / "x", tile_size=40, buffer=20, progress=cb, jobs=jobs)
        left = list((tmp_path / "x").glob("*.tif*")) + list((tmp_path / "x").glob("*.geojson*"))
        assert not left  # no half-written product
    assert not multiprocessing.active_children()  # the tile processes were stopped


def _window_refused(h):
    """A window function that refuses (module level, so a spawned tile process can unpickle it)."""
    raise errors.InvalidParameter("window function refused")


def test_an_error_in_a_tile_process_reaches_the_caller(scan_files, tmp_path):
    params = Params(tile_size=40, buffer=20, metrics_res=20, trees=lmf(ws=_window_refused))
    for jobs in (1, 2):
        with pytest.raises(errors.InvalidParameter, match="window function refused"):
            run(scan_files[1], tmp_path / "x", params=params, jobs=jobs)
        left = list((tmp_path / "x").glob("*.tif*")) + list((tmp_path / "x").glob("*.geojson*"))
        assert not left  # no half-written product
    assert not multiprocessing.active_children()


def test_a_large_raster_gets_internal_overviews(tmp_path):
    """QGIS and web maps zoomed out read overviews: down to 256 px, and no rio-cogeo warning."""
    g = Grid(0.0, 600.0, 1.0, 600, 600)
    p = write_cog(tmp_path / "big.tif", np.random.default_rng(0).random((600, 600)), g, "EPSG:32610", ["height"])
    ok, errs, warns = validate_cog(p)
    assert ok and not errs and not warns
    with rasterio.open(p) as ds:
        assert ds.overviews(1)[0] == 2 and 600 / ds.overviews(1)[-1] <= 256 and ds.tags(1)["units"] == "metre"


def test_one_tile_alone_then_merge(scan_files, runs, tmp_path):
    """The fan-out path: each tile read and processed on its own, results merged afterwards."""
    whole, parts, _, _ = scan_files
    scan = open_scan(parts)
    # the CHM cell is chosen once for the scan, before its tiles go out (as forest-inventory does)
    params = Params(tile_size=40, buffer=20, metrics_res=20).for_scan(footprint(parts)["first_density"])
    assert params.chm_res == 0.5
    _, cores = plan_tiles(scan.bounds_m, params)
    saved = []
    for i, core in enumerate(cores):
        r = process_tile(read_tile(scan, core, params.buffer), core, params)
        saved.append(save_tile_result(r, tmp_path / f"t{i}.npz"))
    assert load_tile_result(saved[0]).core == cores[0]
    merged = merge_tile_results(saved, tmp_path / "merged", inputs=parts, params=params)
    # the same summary as the run in one process (but its timings and file paths)
    tiled = runs["tiled"]
    for key in ("tree_count", "crown_count", "tree_height_mean", "tree_height_max", "area_ha", "stems_per_ha",
                "tiles", "point_count", "points_processed", "ground_share", "canopy_cover", "bounds",
                "grid_metric_means"):
        assert merged[key] == pytest.approx(tiled[key], rel=1e-9), key
    assert merged["params"] == tiled["params"] == params.to_dict()
    assert tiled["tree_height_mean"] > 5 and tiled["stems_per_ha"] > 50
    # area: the footprint (the forest is 120 m square), not the metrics grid's bounding box
    assert tiled["area_ha"] == pytest.approx(1.44, rel=0.03)
    x, _ = read_raster(merged["products"]["chm"])
    y, _ = read_raster(tiled["products"]["chm"])
    assert np.nanmax(np.abs(x - y)) <= 1e-6


def test_a_tile_part_holding_python_objects_is_refused(tmp_path):
    """Parts cross machines through shared storage: loading one must never unpickle."""
    evil = tmp_path / "evil.npz"
    np.savez(evil, core=np.zeros(4), crowns_wkb=np.array([object()], dtype=object))
    with pytest.raises(errors.InvalidPart):
        load_tile_result(evil)


def test_polygon_metrics_equal_cloud_metrics(scan_files):
    whole, parts, pts, truth = scan_files
    ox, oy = truth.bounds[:2]
    plots = [shapely.Point(ox + 60, oy + 60).buffer(11.28), shapely.box(ox + 10, oy + 10, ox + 30, oy + 30),
             shapely.box(ox - 500, oy - 500, ox - 400, oy - 400)]
    res = polygon_metrics(parts, plots)
    assert len(res) == 3 and res[2]["n"] == 0
    assert res[0]["area_m2"] == pytest.approx(400, rel=0.01)
    assert 0 < res[0]["cover"] <= 100 and res[0]["zmax"] > 10 and res[0]["lad"]["z"]
    # same plot from one file or four: identical
    res1 = polygon_metrics([whole], plots[:1])
    assert res1[0]["zq95"] == pytest.approx(res[0]["zq95"], abs=1e-9)


def test_footprint_of_a_multi_file_scan(scan_files):
    whole, parts, pts, truth = scan_files
    fp = footprint(parts)
    assert fp["point_count"] == len(pts)
    assert fp["footprint"].area == pytest.approx(120 * 120, rel=0.03)
    assert fp["density"] == pytest.approx(len(pts) / (120 * 120), rel=0.05)
    assert fp["crs_epsg"] == 32610


def test_feet_scan_gives_metre_heights_and_native_coordinates(tmp_path):
    pts, truth = make_forest("open", size=50.0, seed=12)
    ft = 0.3048
    feet = Points(x=pts.x / ft, y=pts.y / ft, z=pts.z / ft, intensity=pts.intensity,
                  return_number=pts.return_number, number_of_returns=pts.number_of_returns,
                  classification=pts.classification)
    p = write_las(tmp_path / "feet.laz", feet, crs="EPSG:2992")  # Oregon Lambert (ft)
    s = inventory([p], tmp_path / "out", tile_size=60, buffer=20, metrics_resolution=20)
    assert s["units_to_metre"] == pytest.approx(ft)
    assert s["tree_height_max"] == pytest.approx(truth.trees["height"].max(), abs=0.6)
    x, meta = read_raster(s["products"]["dtm"])
    assert meta["transform"].a == pytest.approx(0.5 / ft)  # 0.5 m cells in feet units
    feats = json.loads(open(s["products"]["trees"]).read())["features"]
    xs = np.array([f["geometry"]["coordinates"][0] for f in feats])
    assert xs.min() >= feet.x.min() - 1 and xs.max() <= feet.x.max() + 1


def test_bad_inputs_to_the_pipeline(tmp_path):
    pts, _ = make_forest("open", size=30.0, seed=13)
    nog = pts.replace(classification=np.ones(len(pts), np.uint8))
    p = write_las(tmp_path / "noground.laz", nog.subset(nog.z > nog.z.min() + 15))
    with pytest.raises(errors.NoGroundPoints):
        inventory([p], tmp_path / "o", params=Params(reuse_ground=True), tile_size=40, buffer=20,
                  ground=__import__("processes.lidar", fromlist=["csf"]).csf(class_threshold=0.0))
    with pytest.raises(errors.InvalidParameter):
        inventory([p], tmp_path / "o", resolution=-1)
    nocrs = write_las(tmp_path / "nocrs.laz", pts, crs=None)
    with pytest.raises(errors.UnknownCRS):
        inventory([nocrs], tmp_path / "o")


def test_cli_inventory_and_error_exit(scan_files, tmp_path):
    whole = scan_files[0]
    r = subprocess.run([sys.executable, "-m", "processes.lidar", "chm", str(whole), "--out", str(tmp_path),
                        "--tile-size", "60", "--buffer", "20"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["products"]["chm"].endswith("chm.tif")
    assert validate_cog(tmp_path / "chm.tif")[0]
    bad = tmp_path / "bad.laz"
    bad.write_bytes(b"garbage" * 100)
    r = subprocess.run([sys.executable, "-m", "processes.lidar", "inspect", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "LASF" in r.stderr


@pytest.mark.skipif(len(BCTS) < 4, reason="../shared/data/bcts_*.laz not present")
def test_bcts_tiles_end_to_end(tmp_path):
    t = time.perf_counter()
    s = inventory(BCTS, tmp_path, tile_size=100, buffer=30)
    dt = time.perf_counter() - t
    print(f"bcts (4 files, {s['point_count']:,} points): ground share {s['ground_share']:.3f}, "
          f"trees {s['tree_count']}, canopy cover {s['canopy_cover']:.3f}, {dt:.1f} s "
          f"({s['point_count'] / dt:,.0f} points/s)")
    assert s["crs_epsg"] == 3005 and s["point_count"] == 2_834_350
    assert s["tree_count"] > 500 and 0.3 < s["canopy_cover"] < 1.0
    for key in RASTERS:
        assert validate_cog(s["products"][key])[0]
    x, _ = read_raster(s["products"]["chm"])
    assert np.nanpercentile(x, 99) < 80
