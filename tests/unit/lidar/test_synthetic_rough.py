"""The simulator's rough forests (``synthetic.ROUGH``): branch tips, leaders, gaps, saplings and
herbs as real scans see them, with the truth still exact — and rough off changes nothing."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from processes.lidar.grid import Grid
from processes.lidar.synthetic import HARD, ROUGH, make_forest

OFF = dict(branches=0.0, leaders=0.0, gaps=0.0, saplings=0.0, low_vegetation=0.0)


@pytest.fixture(scope="module")
def forests():
    """(smooth, rough) dense 60 m stands of one seed, at 8 and 1 pulses/m²."""
    return {d: (make_forest("dense", size=60, seed=5, density=d),
                make_forest("dense", size=60, seed=5, density=d, **ROUGH)) for d in (8.0, 1.0)}


def _local_maxima(truth, res=0.25, window=3.0) -> int:
    """Local maxima of the true canopy (>= 2 m) on a ``res`` grid in a ``window`` square."""
    g = Grid.covering(truth.bounds, res)
    z = truth.canopy(*g.centers())
    peak = z == ndimage.maximum_filter(z, size=int(round(window / res)), mode="nearest")
    return int(np.count_nonzero(peak & (z >= 2.0)))


def _disk(x, y, radius=1.0, nr=50, na=180):
    """Points on rings every radius/nr (one of them on the edge), na azimuths each, around each (x, y)."""
    r, a = np.meshgrid(np.linspace(radius / nr, radius, nr), np.linspace(0, 2 * np.pi, na, endpoint=False))
    return x[:, None] + (r * np.cos(a)).ravel()[None], y[:, None] + (r * np.sin(a)).ravel()[None]


@pytest.mark.parametrize("kind, settings", [("open", {}), ("dense", dict(density=1.0, terrain="steep")),
                                            ("two_layer", HARD)])
def test_rough_off_is_bit_identical_to_the_default(kind, settings):
    pts, truth = make_forest(kind, size=50, seed=7, **settings)
    off_pts, off_truth = make_forest(kind, size=50, seed=7, **settings, **OFF)
    for name in ("x", "y", "z", "intensity", "return_number", "number_of_returns", "classification"):
        assert np.array_equal(getattr(pts, name), getattr(off_pts, name)), name
    assert np.array_equal(truth.is_noise, off_truth.is_noise) and np.array_equal(truth.is_ground, off_truth.is_ground)
    assert truth.trees.keys() == off_truth.trees.keys() and "rough_key" not in truth.trees
    for k in truth.trees:
        assert np.array_equal(truth.trees[k], off_truth.trees[k]), k
    g = Grid.covering(truth.bounds, 0.5)
    assert np.array_equal(truth.canopy(*g.centers()), off_truth.canopy(*g.centers()))
    assert np.array_equal(truth.canopy_cells(g), off_truth.canopy_cells(g))
    assert truth.params == off_truth.params and truth.saplings == off_truth.saplings == {}


def test_rough_forest_keeps_the_stand_and_the_pulses(forests):
    """Roughness draws from its own stream: the same trees (stems, heights, crowns) and the
    same pulse positions as the smooth forest of the seed."""
    for (_, smooth), (_, rough) in forests.values():
        for k in ("x", "y", "height", "crown_radius", "crown_length", "broadleaf", "lean_dx", "outline_amp"):
            assert np.array_equal(smooth.trees[k], rough.trees[k]), k
        assert set(ROUGH.items()) <= set(rough.params.items())
    first = [np.sort(p.x[(p.return_number == 1) & ~t.is_noise]) for p, t in forests[8.0]]
    assert np.array_equal(*first)


@pytest.mark.parametrize("density", [8.0, 1.0])
def test_every_visible_apex_is_the_highest_canopy_point_within_1_m(forests, density):
    _, (_, truth) = forests[density]
    t = truth.trees
    v = np.flatnonzero(t["visible"])
    apex = truth.canopy(t["x"][v], t["y"][v])
    disk = truth.canopy(*_disk(t["x"][v], t["y"][v]))
    print(f"\nd{density:g}: {len(v)} of {len(t['x'])} trees visible; highest point within 1 m minus apex: "
          f"max {np.max(disk.max(axis=1) - t['height'][v]):+.4f} m")
    assert len(v) >= 0.8 * len(t["x"])
    assert np.array_equal(apex, t["height"][v])                 # the apex is at the stem, at its height
    assert np.all(disk.max(axis=1) <= t["height"][v])           # and nothing within 1 m is higher


def test_two_layer_hard_and_rough_apexes_stay_on_top():
    _, truth = make_forest("two_layer", size=60, seed=3, density=4, **HARD, **ROUGH)
    t = truth.trees
    v = np.flatnonzero(t["visible"])
    assert len(v) >= 0.6 * len(t["x"])
    assert np.array_equal(truth.canopy(t["x"][v], t["y"][v]), t["height"][v])
    assert np.all(truth.canopy(*_disk(t["x"][v], t["y"][v])).max(axis=1) <= t["height"][v])


def test_rough_canopy_has_more_local_maxima(forests):
    (_, smooth), (_, rough) = forests[8.0]
    n_smooth, n_rough = _local_maxima(smooth), _local_maxima(rough)
    n_small = (_local_maxima(smooth, window=1.0), _local_maxima(rough, window=1.0))
    print(f"\nlocal maxima >= 2 m, 0.25 m grid: 3 m window smooth {n_smooth}, rough {n_rough}; "
          f"1 m window smooth {n_small[0]}, rough {n_small[1]}; true trees {len(smooth.trees['x'])}")
    assert n_rough > n_smooth
    assert n_small[1] > 1.5 * n_small[0]                        # branch tips: many more small maxima


def test_conifer_branch_tips_and_broadleaf_leaders_are_sub_maxima_below_the_apex(forests):
    """Trees of the rough stand scanned alone (``trees=``, far apart): every local maximum of a
    crown (0.45 m window, 5 cm grid) but its apex is lower than the apex; the conifers have
    them on their flanks (branch tips), the broadleaves 0.5-2 m below the apex, 1-2.5 m from it
    (leaders)."""
    _, (_, truth) = forests[8.0]
    t = truth.trees
    keep: list[int] = []
    for i in np.argsort(-t["height"]):   # a set of trees whose crowns are 1.5 m apart or more
        gap = [np.hypot(t["x"][i] - t["x"][j], t["y"][i] - t["y"][j]) - t["crown_radius"][i] - t["crown_radius"][j]
               for j in keep]
        if min(gap, default=np.inf) > 1.5:
            keep.append(i)
    _, alone = make_forest("dense", size=60, seed=6, trees={k: v[keep] for k, v in t.items()}, **ROUGH)
    a = alone.trees
    found = {False: 0, True: 0}
    for i in range(len(a["x"])):
        off = np.arange(-a["crown_radius"][i], a["crown_radius"][i], 0.05)
        x, y = np.meshgrid(a["x"][i] + off, a["y"][i] + off)
        z = alone.canopy(x, y)
        d = np.hypot(x - a["x"][i], y - a["y"][i])
        peak = (z == ndimage.maximum_filter(z, size=9)) & (z > a["height"][i] - a["crown_length"][i] + 0.01) & (z >= 2)
        assert alone.canopy(a["x"][i:i + 1], a["y"][i:i + 1])[0] == a["height"][i] >= z.max()
        assert np.all(z[peak & (d > 0.1)] < a["height"][i])
        sub = peak & (d > 0.3)
        if a["broadleaf"][i]:
            dz = a["height"][i] - z[sub]
            found[True] += bool(np.any((d[sub] > 0.9) & (d[sub] < 2.6) & (dz > 0.4) & (dz < 2.2)))
        else:
            found[False] += bool(sub.any())
    n_bl = int(np.sum(a["broadleaf"]))
    print(f"\n{len(keep)} trees alone: conifers with flank maxima {found[False]} of {len(keep) - n_bl}, "
          f"broadleaves with a leader {found[True]} of {n_bl}")
    assert n_bl >= 3 and found[False] >= 0.6 * (len(keep) - n_bl) and found[True] >= 0.5 * n_bl


@pytest.mark.parametrize("density", [8.0, 1.0])
def test_truth_canopy_is_the_surface_the_first_returns_saw(density):
    """With a beam of no width, no first return lies above the true canopy (roughness,
    saplings and herbs included) beyond the ranging noise, and most lie on it."""
    pts, truth = make_forest("dense", size=60, seed=5, density=density, footprint=0.0, **ROUGH)
    f = (pts.return_number == 1) & ~truth.is_noise
    e = pts.z[f] - truth.ground(pts.x[f], pts.y[f]) - truth.canopy(pts.x[f], pts.y[f])
    assert abs(f.sum() / 60**2 - density) < 0.1 * density       # 1 pulse/m² works
    assert e.max() < 0.2 and np.mean(np.abs(e) < 0.15) > 0.7
    g = Grid.covering(truth.bounds, 1.0)             # the cells' maxima come from the same surface
    cx, cy = g.centers()
    offs = (np.arange(4) + 0.5) / 4 - 0.5
    cells = np.max([truth.canopy(cx + dx, cy + dy) for dx in offs for dy in offs], axis=0)
    assert np.array_equal(truth.canopy_cells(g), cells)


def test_saplings_and_herbs_are_under_2_m_and_not_trees(forests):
    (_, smooth), (pts, rough) = forests[8.0]
    s, t = rough.saplings, rough.trees
    assert len(s["x"]) >= 20 and not smooth.saplings
    assert np.all((s["height"] >= 0.5) & (s["height"] < 2.0))
    assert np.all(t["height"] >= 2.0) and len(t["x"]) == len(smooth.trees["x"])
    # not a tree: no stem of the truth stands where a sapling does
    assert np.min(np.hypot(s["x"][:, None] - t["x"][None], s["y"][:, None] - t["y"][None])) > 0.1
    # in the canopy and in the scan: the canopy reaches each sapling's top at its stem, and
    # first returns hit saplings between 0.5 and 2 m
    assert np.all(rough.canopy(s["x"], s["y"]) >= s["height"] - 1e-9)
    f = (pts.return_number == 1) & ~rough.is_noise
    h = pts.z[f] - rough.ground(pts.x[f], pts.y[f])
    near = np.min(np.hypot(pts.x[f][:, None] - s["x"][None], pts.y[f][:, None] - s["y"][None]), axis=1) < 0.2
    assert np.count_nonzero(near & (h > 0.4) & (h < 2.1)) >= 10
    # herbs (0.1-0.8 m) over much of the open ground, among shrubs and saplings (in the canopy now)
    g = Grid.covering(rough.bounds, 0.5)
    z, z0 = rough.canopy(*g.centers()), smooth.canopy(*g.centers())
    ground = z[z0 == 0]
    print(f"\n{len(s['x'])} saplings; open ground: {np.mean((ground >= 0.1) & (ground <= 0.8)):.0%} under 0.1-0.8 m, "
          f"{np.mean(ground == 0):.0%} bare")
    assert np.mean((ground >= 0.1) & (ground <= 0.8)) > 0.25 and ground.max() < 2.0
