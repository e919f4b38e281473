"""The project's simulator: its hard settings do what they say (the truth stays exact)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from processes.lidar.grid import Grid
from processes.lidar.synthetic import HARD, make_forest


def _crown_cells(truth, i, res=0.1):
    """Cells of tree i's crown (where it owns the surface) and the surface there."""
    t = truth.trees
    reach = t["crown_radius"][i] * 1.6
    g = Grid.covering((t["x"][i] - reach, t["y"][i] - reach, t["x"][i] + reach, t["y"][i] + reach), res)
    cx, cy = g.centers()
    return cx, cy, truth.canopy(cx, cy)


def test_leaning_stems_put_the_apex_off_the_crown_centre_and_outlines_wave():
    _, easy = make_forest("open", size=80, seed=4)
    _, hard = make_forest("open", size=80, seed=4, **HARD)
    off, spread = [], []
    for truth in (easy, hard):
        t = truth.trees
        i = int(np.argmax(t["height"] * ~t["broadleaf"]))  # the tallest conifer: no neighbour covers it
        cx, cy, z = _crown_cells(truth, i)
        lab, _ = ndimage.label(z > 0.5)
        crown = lab == lab[np.unravel_index(np.argmax(z), z.shape)]  # the crown holding the apex
        # the apex is the highest point of the surface, at the tree's position in both
        assert truth.canopy(t["x"][i:i + 1], t["y"][i:i + 1])[0] == np.float64(t["height"][i])
        assert z.max() <= t["height"][i]
        mx, my = cx[crown].mean(), cy[crown].mean()
        off.append(np.hypot(mx - t["x"][i], my - t["y"][i]) / t["crown_radius"][i])
        # outline: distance from the crown's centroid to its edge cells, relative spread
        edge = crown & ~np.roll(crown, 1, 0) | crown & ~np.roll(crown, 1, 1)
        r = np.hypot(cx[edge] - mx, cy[edge] - my)
        spread.append(r.std() / r.mean())
    print(f"apex off centre {off}, outline spread {spread}")
    assert off[0] < 0.03 and off[1] > 0.05
    assert spread[1] > 2 * spread[0]


def test_pass_through_crowns_leave_more_first_returns_inside_the_crown():
    pts, easy = make_forest("dense", size=60, seed=2, terrain="flat")
    hpts, hard = make_forest("dense", size=60, seed=2, terrain="flat", **HARD)
    shares = []
    for p, truth in ((pts, easy), (hpts, hard)):
        first = (p.return_number == 1) & ~truth.is_noise
        surf = truth.canopy(p.x[first], p.y[first])
        h = p.z[first] - truth.ground(p.x[first], p.y[first])
        on = surf > 2
        shares.append(np.mean(h[on] < surf[on] - 1.0))  # the first return lies well inside the crown
    assert shares[0] < 0.25 and shares[1] > 1.5 * shares[0]
