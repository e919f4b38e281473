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
