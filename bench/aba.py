"""Area-based models: fit, validation and prediction times for 40, 400 and 4,000 plots and
a 100 km² grid (250,000 cells of 20 m), beside the libraries' own calls as references
(numpy lstsq for one subset, scikit-learn's own forest predict). Figures only: never
passes or fails.

Plots and cells are drawn from a simulated 16 ha forest of managed blocks
(processes/lidar/aba_forest.py): its 400 cells of 20 m with their true volume, resampled
with 10 % multiplicative noise to the plot counts, and tiled to 500 x 500 cells. Plots
then repeat cells, so the CV errors printed here are not accuracy figures (those are in
tests/unit/lidar/test_aba.py); they show that the same calls run at every size.

    python bench/aba.py                # 40, 400 and 4,000 plots
    python bench/aba.py --plots 40 400 --cells 62500
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _t(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plots", type=int, nargs="+", default=[40, 400, 4000])
    ap.add_argument("--cells", type=int, default=250_000, help="grid cells (250,000 = 100 km² at 20 m)")
    a = ap.parse_args()

    from processes.lidar import aba, aba_forest as af, aba_map
    from processes.lidar.grid import Grid
    from processes.lidar.metrics import METRIC_NAMES

    (forest, t_sim) = _t(af.make_aba_forest, "blocks", 400.0, 1)
    grid = Grid.covering(forest.bounds, 20.0)
    bands, t_gm = _t(af.grid_metrics, forest.points, grid)
    truth = af.cell_truth(forest, grid)["volume"].ravel()
    flat = bands.reshape(len(METRIC_NAMES), -1)
    ok = np.isfinite(flat[[METRIC_NAMES.index(m) for m in aba.DEFAULT_METRICS]]).all(axis=0)
    pool = np.flatnonzero(ok)
    print(f"source forest: {len(forest.trees['x'])} trees, {len(forest.points)} points, simulated in {t_sim:.1f} s; "
          f"grid metrics of {grid.nrow * grid.ncol} cells in {t_gm:.2f} s")

    side = int(round(np.sqrt(a.cells)))
    rng = np.random.default_rng(0)
    big = flat[:, rng.choice(pool, side * side)].reshape(len(METRIC_NAMES), side, side)
    print(f"grid: {side} x {side} = {side * side:,} cells ({side * side * 0.04 / 100:.0f} km² at 20 m), "
          f"{big.nbytes / 1e6:.0f} MB of metrics\n")
    head = (f"{'plots':>6} {'method':>7} {'fit s':>7} {'10-fold CV s':>13} {'CV RMSE %':>10} {'base %':>7} "
            f"{'predict s':>10} {'ref predict s':>14} {'total s':>8} {'metrics'}")
    print(head)
    print("-" * len(head))
    for n in a.plots:
        pick = rng.choice(pool, n)
        table = {m: flat[METRIC_NAMES.index(m), pick] for m in aba.DEFAULT_METRICS}
        y = truth[pick] * np.exp(rng.normal(0, 0.1, n))
        for method in ("linear", "rf"):
            model, t_fit = _t(aba.fit, y, table, method=method)
            v, t_cv = _t(aba.cross_validate, y, table, folds=10, method=method)
            pred, t_pred = _t(aba_map.predict_grid, model, big, METRIC_NAMES)
            X = np.stack([big[METRIC_NAMES.index(m)].ravel() for m in model.metrics], axis=1)
            if method == "rf":     # the reference: scikit-learn's forest, fitted the same way, predicting the same cells
                from sklearn.ensemble import RandomForestRegressor
                Xp = np.column_stack([table[m] for m in model.metrics])
                rf = RandomForestRegressor(n_estimators=aba.RF_TREES, min_samples_leaf=aba.RF_MIN_LEAF,
                                           max_features=aba.RF_MAX_FEATURES, random_state=0, n_jobs=1).fit(Xp, y)
                ref, t_ref = _t(rf.predict, np.nan_to_num(X))
            else:                  # the reference: numpy's lstsq on the chosen metrics, then a matrix product
                A = np.column_stack([np.ones(n), np.column_stack([table[m] for m in model.metrics])])

                def lstsq_predict():
                    beta = np.linalg.lstsq(A, y, rcond=None)[0]
                    return beta[0] + X @ beta[1:]
                ref, t_ref = _t(lstsq_predict)
            agree = np.nanmax(np.abs(pred.values.ravel() - ref)) if method == "rf" else float("nan")
            _, t_tot = _t(aba_map.total, pred.values, None, 400.0, v.rmse, n)
            names = ", ".join(model.metrics) if method == "linear" else f"{len(model.metrics)} (all candidates)"
            print(f"{n:>6} {method:>7} {t_fit:>7.2f} {t_cv:>13.2f} {v.rmse_pct:>10.1f} {v.baseline_rmse_pct:>7.1f} "
                  f"{t_pred:>10.2f} {t_ref:>14.2f} {t_tot:>8.3f} {names}"
                  + (f"  (max |ours - sklearn| {agree:.1e})" if method == "rf" else ""))


if __name__ == "__main__":
    main()
