"""Metrics equal a direct numpy computation of their lidR definitions."""
from __future__ import annotations

import numpy as np
import pytest

from processes.lidar import metrics
from processes.lidar.points import from_arrays


def _direct(z, inten, rn, nr, cls):
    """Straightforward one-group implementation of the lidR definitions."""
    z = np.maximum(z, 0)
    n = len(z)
    m = z.mean()
    d = z - m
    out = {"n": n, "zmax": z.max(), "zmean": m, "zsd": z.std(ddof=1),
           "zskew": (np.sum(d**3) / n) / (np.sum(d**2) / n) ** 1.5,
           "zkurt": n * np.sum(d**4) / np.sum(d**2) ** 2}
    if z.max() < 2:
        out["zentropy"] = np.nan
    else:
        nb = int(np.ceil(z.max()))
        h = np.histogram(np.minimum(np.floor(z), nb - 1), bins=np.arange(nb + 1))[0] / n
        h = h[h > 0]
        out["zentropy"] = -np.sum(h * np.log(h)) / np.log(nb)
    out["pzabovezmean"] = 100 * np.mean(z > m)
    out["pzabove2"] = 100 * np.mean(z > 2)
    for q in range(5, 100, 5):
        out[f"zq{q}"] = np.percentile(z, q)
    for i in range(1, 10):
        out[f"zpcum{i}"] = 100 * np.mean(z < z.max() * i / 10)
    it = inten.astype(float)
    di = it - it.mean()
    out.update(itot=it.sum(), imax=it.max(), imean=it.mean(), isd=it.std(ddof=1),
               iskew=(np.sum(di**3) / n) / (np.sum(di**2) / n) ** 1.5, ikurt=n * np.sum(di**4) / np.sum(di**2) ** 2,
               ipground=100 * it[cls == 2].sum() / it.sum())
    for q in (10, 30, 50, 70, 90):
        out[f"ipcumzq{q}"] = 100 * it[z <= np.percentile(z, q)].sum() / it.sum()
    for r in range(1, 6):
        out[f"p{r}th"] = 100 * np.mean(rn == r)
    out["pground"] = 100 * np.mean(cls == 2)
    out["cover"] = 100 * np.sum((rn == 1) & (z > 2)) / np.sum(rn == 1)
    last = rn == nr
    out["gap"] = 100 * np.sum(last & (z <= 2)) / np.sum(last)
    prof = metrics.lad_profile(z)
    out["lai"] = float(np.nansum(np.where(np.isfinite(prof["lad"]), prof["lad"], 0)))
    return out


def _random_points(rng, n):
    z = np.concatenate([rng.gamma(2.0, 5.0, n - n // 5), rng.normal(0, 0.05, n // 5)])
    nr = rng.integers(1, 4, n)
    rn = np.minimum(rng.integers(1, 4, n), nr)
    cls = np.where(z < 0.1, 2, 1)
    return from_arrays(rng.uniform(0, 100, n), rng.uniform(0, 100, n), z, intensity=rng.integers(1, 4000, n),
                       return_number=rn, number_of_returns=nr, classification=cls)


def test_group_metrics_equal_direct_numpy():
    rng = np.random.default_rng(42)
    p = _random_points(rng, 20_000)
    groups = rng.integers(0, 7, len(p))
    groups[groups == 5] = 4  # group 5 empty
    got = metrics.group_metrics(p, groups, 7)
    for gi in range(7):
        sel = groups == gi
        if not sel.any():
            assert all(np.isnan(got[k][gi]) for k in metrics.METRIC_NAMES if k != "n")
            continue
        want = _direct(p.z[sel], p.intensity[sel], p.return_number[sel], p.number_of_returns[sel],
                       p.classification[sel])
        for k, v in want.items():
            assert got[k][gi] == pytest.approx(v, rel=1e-9, abs=1e-9, nan_ok=True), k


@pytest.mark.filterwarnings("ignore:Degrees of freedom")  # numpy std of the lone point
def test_group_metrics_edge_groups_equal_direct_numpy():
    """Degenerate groups, interleaved in the point order: their NaN / inf / 0 values follow the definitions."""
    rng = np.random.default_rng(3)
    parts = [  # z, intensity, return_number, number_of_returns of groups 0..3 (group 4 is empty)
        ([12.5], [300], [1], [1]),  # a lone point: no sd, skew, kurt
        (np.zeros(6), rng.integers(1, 500, 6), np.ones(6), np.ones(6)),  # all heights 0
        (rng.uniform(0, 30, 50), np.zeros(50), rng.integers(1, 3, 50), np.full(50, 2)),  # intensity total 0
        (rng.uniform(-1, 8, 40), rng.integers(1, 500, 40), np.full(40, 2), np.full(40, 3)),  # no first, no last
    ]
    z, inten, rn, nr = (np.concatenate([np.asarray(c[i], float) for c in parts]) for i in range(4))
    groups = np.repeat(np.arange(len(parts)), [len(c[0]) for c in parts])
    perm = rng.permutation(len(z))
    z, inten, rn, nr, groups = z[perm], inten[perm], rn[perm], nr[perm], groups[perm]
    cls = np.where(z < 0.5, 2, 1)
    p = from_arrays(np.zeros(len(z)), np.zeros(len(z)), z, intensity=inten, return_number=rn,
                    number_of_returns=nr, classification=cls)
    rumple = np.arange(5.0) + 1
    got = metrics.group_metrics(p, groups, 5, dsm_rumple=rumple)
    assert list(got) == metrics.METRIC_NAMES
    assert got["n"][4] == 0 and all(np.isnan(got[k][4]) for k in metrics.METRIC_NAMES if k != "n")
    assert np.array_equal(got["rumple"][:4], rumple[:4])
    for gi in range(4):
        sel = groups == gi
        with np.errstate(all="ignore"):
            want = _direct(p.z[sel], p.intensity[sel], p.return_number[sel], p.number_of_returns[sel],
                           p.classification[sel])
        for k, v in want.items():
            assert got[k][gi] == pytest.approx(v, rel=1e-9, abs=1e-9, nan_ok=True), (gi, k)
    assert np.isnan(got["zsd"][0]) and np.isnan(got["zskew"][0]) and np.isnan(got["zkurt"][0])
    assert got["zpcum5"][1] == 0.0 and np.isnan(got["zentropy"][1])
    assert np.isnan(got["ipground"][2]) and np.isnan(got["ipcumzq50"][2]) and got["isd"][2] == 0
    assert np.isnan(got["cover"][3]) and np.isnan(got["gap"][3])
    with pytest.raises(ValueError):
        metrics.group_metrics(p, groups, 3)


def test_cloud_metrics_single_plot_and_lad():
    rng = np.random.default_rng(1)
    p = _random_points(rng, 5000)
    m = metrics.cloud_metrics(p)
    want = _direct(p.z, p.intensity, p.return_number, p.number_of_returns, p.classification)
    for k in ("zmax", "zq95", "zentropy", "cover", "lai"):
        assert m[k] == pytest.approx(want[k], rel=1e-9, abs=1e-9)
    assert len(m["lad"]["z"]) == len(m["lad"]["lad"]) > 5
    assert set(metrics.METRIC_NAMES) <= set(m)


def test_low_canopy_entropy_undefined_and_zpcum_zero():
    p = from_arrays(np.zeros(10), np.zeros(10), np.linspace(0, 1.5, 10))
    m = metrics.group_metrics(p, np.zeros(10, int), 1)
    assert np.isnan(m["zentropy"][0])
    p0 = from_arrays(np.zeros(3), np.zeros(3), np.zeros(3))
    assert metrics.group_metrics(p0, np.zeros(3, int), 1)["zpcum5"][0] == 0.0


def test_rumple_index():
    flat = np.zeros((10, 10))
    assert metrics.rumple_index(flat, 1.0) == pytest.approx(1.0)
    # a plane tilted 45 degrees has area sqrt(2) times its projection
    ramp = np.tile(np.arange(10.0), (10, 1))
    assert metrics.rumple_index(ramp, 1.0) == pytest.approx(np.sqrt(2))
    rng = np.random.default_rng(0)
    rough = rng.uniform(0, 20, (40, 40))
    assert metrics.rumple_index(rough, 1.0) > 3
    blocks = metrics.rumple_per_cell(np.tile(np.arange(20.0), (20, 1)), 10, 1.0)
    assert blocks.shape == (2, 2) and np.allclose(blocks, np.sqrt(2))
