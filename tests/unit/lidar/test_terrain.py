"""Ground classification, DTM and normalisation against the known terrain."""
from __future__ import annotations

import numpy as np
import pytest

from processes.lidar import errors, ground, terrain
from processes.lidar.grid import Grid
from processes.lidar.points import GROUND, from_arrays
from processes.lidar.surface import max_per_cell


def _inner_grid(truth, res=1.0, margin=5.0):
    b = truth.bounds
    return Grid.covering((b[0] + margin, b[1] + margin, b[2] - margin, b[3] - margin), res)


def _rmse(dtm, truth, grid):
    cx, cy = grid.centers()
    e = dtm - truth.ground(cx, cy)
    return float(np.sqrt(np.nanmean(e**2))), float(np.nanmean(e))


def test_dtm_from_file_ground_class(forests):
    pts, truth = forests("dense", "steep", True)
    pts = ground.drop_noise(pts)
    g = _inner_grid(truth)
    rmse, bias = _rmse(terrain.rasterize_terrain(pts, grid=g).data, truth, g)
    print(f"DTM (file ground class, dense, steep): RMSE {rmse:.3f} m, bias {bias:+.3f} m")
    assert rmse <= 0.05 and abs(bias) < 0.02


def test_dtm_with_csf_on_steep_dense_terrain_with_shrubs(forests):
    pts, truth = forests("dense", "steep", False)
    assert not (pts.classification == GROUND).any()
    pts = ground.drop_noise(ground.classify_noise(pts, ground.ivf()))
    cls = ground.classify_ground(pts, ground.csf())
    g = _inner_grid(truth)
    rmse, bias = _rmse(terrain.rasterize_terrain(cls, grid=g).data, truth, g)
    # the naive answer: lowest point per cell
    naive = max_per_cell(pts.x, pts.y, -pts.z, g) * -1
    naive_rmse, _ = _rmse(naive, truth, g)
    print(f"DTM (CSF, no classes, dense steep + shrubs): RMSE {rmse:.3f} m (lowest point per cell: {naive_rmse:.2f} m)")
    assert rmse <= 0.15
    assert naive_rmse > 3 * rmse


def test_classified_ground_precision(forests):
    pts, truth = forests("two_layer", "steep", False)
    keep = ~ground.is_noise(pts)
    pts2 = ground.classify_ground(pts.subset(keep), ground.csf())
    is_g = pts2.classification == GROUND
    true_g = truth.is_ground[keep]
    precision = (is_g & true_g).sum() / is_g.sum()
    recall = (is_g & true_g).sum() / true_g.sum()
    print(f"CSF ground precision {precision:.3f}, recall {recall:.3f}")
    assert precision > 0.95 and recall > 0.6


def test_normalisation_uses_the_tin_at_each_point(forests):
    pts, truth = forests("open", "hilly", True)
    n = terrain.normalize_height(ground.drop_noise(pts))
    g = n.classification == GROUND
    # ground points sit on the TIN: their height is ~0 (exactly 0 for vertices)
    assert np.abs(n.z[g]).max() < 1e-6
    # vegetation heights equal true heights above the true terrain within the ground noise
    v = ~g & (n.z > 2)
    true_h = pts.z[~ground.is_noise(pts)][v] - truth.ground(n.x[v], n.y[v])
    assert np.sqrt(np.mean((n.z[v] - true_h) ** 2)) < 0.05


def test_idw_fallback_outside_the_hull():
    x = np.array([0.0, 10, 0, 10])
    y = np.array([0.0, 0, 10, 10])
    z = np.array([1.0, 1, 1, 1])
    m = terrain.GroundModel(x, y, z)
    assert m(np.array([5.0]), np.array([5.0]))[0] == pytest.approx(1.0)
    assert m(np.array([20.0]), np.array([5.0]))[0] == pytest.approx(1.0)  # IDW
    knn = terrain.GroundModel(x, y, z, terrain.knnidw(k=2))
    assert knn(np.array([1.0]), np.array([1.0]))[0] == pytest.approx(1.0)


def test_no_ground_points():
    p = from_arrays([0.0, 1, 2], [0.0, 1, 0], [5.0, 6, 7], classification=[1, 1, 1])
    with pytest.raises(errors.NoGroundPoints):
        terrain.GroundModel.from_points(p)


def test_noise_filters_find_isolated_points(forests):
    pts, truth = forests("open", "hilly", True)
    for algo in (ground.ivf(), ground.sor()):
        out = ground.classify_noise(pts, algo)
        flagged = ground.is_noise(out)
        rec = (flagged & truth.is_noise).sum() / truth.is_noise.sum()
        false = (flagged & ~truth.is_noise).sum() / (~truth.is_noise).sum()
        print(f"{type(algo).__name__}: noise recall {rec:.3f}, false alarm {false:.5f}")
        assert rec > 0.9 and false < 0.01


def _triangle_set(tris: np.ndarray) -> set:
    return set(map(tuple, np.sort(tris, axis=1).tolist()))


@pytest.mark.parametrize("share", [0.001, 0.02])
def test_refill_equals_a_new_triangulation(share):
    """Removing vertices by refilling their cavities gives the Delaunay triangulation of the rest."""
    from processes.lidar.tin import refill, triangulate

    rng = np.random.default_rng(3)
    x, y = 500_000 + rng.random(50_000) * 100, 5_400_000 + rng.random(50_000) * 100
    tris, _ = triangulate(x - 500_000, y - 5_400_000, neighbors=False)
    removed = rng.random(len(x)) < share
    removed[np.argmin(x)] = True  # a vertex of the hull too
    new, after = refill(x, y, tris, removed)
    rest = np.flatnonzero(~removed)
    full, _ = triangulate(x[rest] - 500_000, y[rest] - 5_400_000, neighbors=False)
    assert _triangle_set(after) == _triangle_set(rest[full])
    assert not removed[new].any() and len(new) > removed.sum()
