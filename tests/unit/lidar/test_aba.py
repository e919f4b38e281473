"""Area-based models against truth: simulated forests whose per-hectare attributes are known.

Two forest families (processes/lidar/aba_forest.py): managed 100 m blocks of one age and
density each, and a natural mixed forest whose density and site quality vary smoothly.
Each is 16 ha, scanned at 3 pulses/m²; 40 circular 400 m² field plots are measured with
3 % DBH error, 5 % height error and 2 m GNSS error; the models are fitted on the plots'
LiDAR metrics and predict the 400 cells of 20 m (400 m², the plots' area).
"""
from __future__ import annotations

import json

import numpy as np
import shapely
import pytest

from processes.lidar import aba, aba_forest as af, aba_map
from processes.lidar.grid import Grid
from processes.lidar.metrics import METRIC_NAMES

# the model beats a mean-only prediction by this factor at least (CV RMSE / baseline RMSE):
# stems/ha is the hard one for ABA (crowns, not stems, are seen), basal area and volume follow height
MARGIN = {"stems": 0.85, "basal_area": 0.6, "volume": 0.6}


@pytest.fixture(scope="module", params=["blocks", "gradient"])
def case(request):
    forest = af.make_aba_forest(request.param, seed=1)
    centres = af.place_plots(forest, 40)
    measured, true, recorded = af.field_plots(forest, centres)
    table = af.plot_metrics(forest.points, recorded)
    grid = Grid.covering(forest.bounds, 20.0)
    bands = af.grid_metrics(forest.points, grid)
    return dict(family=request.param, forest=forest, measured=measured, true=true, table=table, grid=grid,
                bands=bands)


def test_field_plots_err_as_stated(case):
    """The crew's values differ from the plots' truth by about the stated errors, stems not at all."""
    m, t = case["measured"], case["true"]
    assert np.array_equal(m["stems"], t["stems"])
    ratio = m["basal_area"] / t["basal_area"]
    assert 0.97 < np.mean(ratio) < 1.03 and 0.002 < np.std(ratio) < 0.03
    assert 40 == len(m["volume"]) and np.all(m["volume"] > 0)


def test_cross_validated_accuracy_and_totals(case):
    """CV RMSE % beats the mean baseline by a clear margin; the forest's predicted totals lie
    within the stated 95 % interval of the true totals."""
    forest, grid = case["forest"], case["grid"]
    truth = forest.totals()
    cells = af.cell_truth(forest, grid)
    print(f"\n{case['family']}: {len(forest.trees['x'])} trees on {forest.size ** 2 / 1e4:.0f} ha, 40 plots of 400 m²")
    for attr in af.ATTRIBUTES:
        y = case["measured"][attr]
        v = aba.cross_validate(y, case["table"], folds=10, method="linear")
        model = aba.fit(y, case["table"], attribute=attr, method="linear")
        pred = aba_map.predict_grid(model, case["bands"], METRIC_NAMES)
        tot = aba_map.total(pred.values, None, grid.res ** 2, v.rmse, len(y))
        cell_rmse = np.sqrt(np.nanmean((pred.values - cells[attr]) ** 2)) / np.mean(cells[attr]) * 100
        print(f"  {attr:10s} CV RMSE {v.rmse_pct:5.1f} % (mean baseline {v.baseline_rmse_pct:5.1f} %), "
              f"bias {v.bias_pct:+5.1f} %, R² {v.r2:.2f}, metrics {model.metrics}; cells vs truth {cell_rmse:.1f} %; "
              f"total {tot['total']:.0f} [{tot['ci_low']:.0f}, {tot['ci_high']:.0f}] vs true {truth[attr]:.0f}; "
              f"extrapolated cells {pred.extrapolated_share:.0%}")
        assert v.rmse_pct < MARGIN[attr] * v.baseline_rmse_pct
        assert v.r2 > 0.2 and abs(v.bias_pct) < 5
        assert len(v.observed) == len(v.predicted) == 40
        assert tot["ci_low"] <= truth[attr] <= tot["ci_high"]
        assert tot["cells"] == grid.nrow * grid.ncol and tot["area_ha"] == pytest.approx(16.0)
        # the CV error is an honest estimate of the map's error against the cells' truth
        assert cell_rmse < 1.75 * v.rmse_pct
        assert 1 <= len(model.metrics) <= 4 and pred.extrapolated_share < 0.5


def test_leave_one_out_and_log_model(case):
    y = case["measured"]["basal_area"]
    loo = aba.cross_validate(y, case["table"], folds="loo", method="linear", log=True)
    k10 = aba.cross_validate(y, case["table"], folds=10, method="linear", log=True)
    assert loo.scheme == "loo" and k10.scheme == "10-fold"
    assert loo.rmse_pct < 0.6 * loo.baseline_rmse_pct
    assert abs(loo.rmse - k10.rmse) < 0.3 * k10.rmse
    model = aba.fit(y, case["table"], method="linear", log=True)
    assert model.log and 1.0 <= model.smearing < 1.1
    assert np.all(model.predict(np.column_stack([case["table"][m] for m in model.metrics])) > 0)


def test_random_forest_beats_baseline_and_round_trips(case):
    if case["family"] != "gradient":
        pytest.skip("one family is enough for the forest's (slower) validation")
    y = case["measured"]["volume"]
    v = aba.cross_validate(y, case["table"], folds=5, method="rf")
    print(f"\n  rf volume CV RMSE {v.rmse_pct:.1f} % (baseline {v.baseline_rmse_pct:.1f} %)")
    assert v.rmse_pct < 0.6 * v.baseline_rmse_pct
    model = aba.fit(y, case["table"], method="rf")
    back = aba.Model.from_dict(json.loads(json.dumps(model.to_dict())), model.blob())
    X = np.column_stack([case["table"][m] for m in model.metrics])
    assert np.allclose(back.predict(X), model.predict(X))
    # the node walk is scikit-learn's forest exactly
    from sklearn.ensemble import RandomForestRegressor
    rf = RandomForestRegressor(n_estimators=aba.RF_TREES, min_samples_leaf=aba.RF_MIN_LEAF,
                               max_features=aba.RF_MAX_FEATURES, random_state=0, n_jobs=1).fit(X, y)
    assert np.allclose(model.predict(X), rf.predict(X))
    assert abs(sum(model.importance.values()) - 1) < 1e-9 and set(model.range_metrics) <= set(model.metrics)


def test_best_subset_finds_the_generating_metrics():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 12))
    X[:, 5] = X[:, 4] + rng.normal(0, 0.01, 200)           # a collinear twin: never selected with its pair
    y = 2 + 3 * X[:, 2] - 1.5 * X[:, 7] + rng.normal(0, 0.1, 200)
    assert sorted(aba.best_subset(X, y, 3)) == [2, 7]
    table = {f"zq{5 * (i + 1)}": X[:, i] for i in range(12)}
    m = aba.fit(y, table, max_metrics=3)
    assert sorted(m.metrics) == ["zq15", "zq40"]
    assert m.intercept == pytest.approx(2, abs=0.05)
    assert sorted(m.coefficients) == pytest.approx([-1.5, 3], abs=0.05)


def test_a_metric_missing_on_one_plot_is_never_chosen():
    """The bcts loop's failure: the metric that best predicts the attribute is NaN on one plot;
    the leave-one-out fold without that plot chose it and predicted NaN for it."""
    rng = np.random.default_rng(4)
    good = rng.uniform(5, 25, 40)
    table = {"zq95": good.copy(), "zmean": good * 0.5 + rng.normal(0, 2, 40)}
    table["zq95"][7] = np.nan
    y = 3 * good + rng.normal(0, 0.5, 40)
    v = aba.cross_validate(y, table, folds="loo")
    assert np.isfinite(v.predicted).all() and np.isfinite(v.rmse) and v.rmse < v.baseline_rmse
    assert aba.fit(y, table).metrics == ["zmean"]
    flat = aba.cross_validate(np.full(40, 2.0), table, folds=5).to_dict()
    assert flat["r2"] is None and json.loads(json.dumps(flat, allow_nan=False))["rmse"] == pytest.approx(0)


def test_cells_cut_by_the_footprint_count_by_their_share():
    from rasterio.transform import from_origin
    from processes.lidar.aba_map import footprint_share, total
    t = from_origin(0, 40, 20, 20)                      # 2 x 2 cells of 20 m
    share = footprint_share(shapely.box(0, 0, 30, 40), t, (2, 2))
    assert share.tolist() == [[1.0, 0.5], [1.0, 0.5]]
    values = np.full((2, 2), 100.0)                     # 100 per ha
    tot = total(values, None, 400.0, 10.0, 40, share=share)
    assert tot["total"] == pytest.approx(100 * 0.12) and tot["area_ha"] == pytest.approx(0.12) and tot["cells"] == 4
    assert tot["mean_per_ha"] == pytest.approx(100)


def test_linear_model_serialises_to_json():
    rng = np.random.default_rng(0)
    table = {"zmean": rng.uniform(5, 25, 50), "cover": rng.uniform(20, 95, 50)}
    y = 4 * table["zmean"] * table["cover"] / 50 * np.exp(rng.normal(0, 0.05, 50))
    m = aba.fit(y, table, method="linear", log=True, attribute="volume")
    d = json.loads(json.dumps(m.to_dict()))
    back = aba.Model.from_dict(d)
    X = np.column_stack([table[k] for k in m.metrics])
    assert m.blob() is None and np.allclose(back.predict(X), m.predict(X))
    assert sorted(d["metrics"]) == ["cover", "zmean"] and d["training_range"]["zmean"][0] == table["zmean"].min()


def test_guard_rails():
    rng = np.random.default_rng(1)
    table = {"zmean": rng.uniform(5, 25, 30), "zmax": rng.uniform(10, 35, 30), "cover": rng.uniform(0, 90, 30)}
    y = table["zmean"] * 10
    with pytest.raises(aba.TooFewPlots, match="at least 10"):
        aba.fit(y[:9], {k: v[:9] for k, v in table.items()})
    with pytest.raises(aba.TooFewPlots, match="30 plots support at most 3 metrics"):
        aba.fit(y, table, max_metrics=4)
    with pytest.raises(aba.ResolutionMismatch, match="about 20.0 m"):
        aba_map.check_resolution([400.0] * 30, 10.0)
    aba_map.check_resolution([400.0] * 30, 20.0)
    aba_map.check_resolution([400.0] * 30, 18.0)        # 324 m²: within a third
    with pytest.raises(aba_map.ResolutionMismatch):
        aba_map.check_resolution([400.0] * 30, 25.0)    # 625 m²
    with pytest.raises(aba.PlotsOutsideScan, match=r"\[12\]"):
        aba_map.check_coverage([11, 12, 13], [True, False, True])
    with pytest.raises(aba.InvalidParameter, match="positive"):
        aba.fit(y - 100, table, log=True)


def test_extrapolation_flag_and_total_formula():
    table = {"zmean": np.linspace(5, 25, 20)}
    m = aba.fit(table["zmean"] * 10 + 5, table)
    bands = np.full((len(METRIC_NAMES), 2, 2), np.nan)
    bands[METRIC_NAMES.index("zmean")] = [[10, 30], [np.nan, 4]]
    p = aba_map.predict_grid(m, bands, METRIC_NAMES)
    assert p.values[0, 0] == pytest.approx(105) and np.isnan(p.values[1, 0])
    assert p.extrapolated.tolist() == [[False, True], [False, True]]
    assert p.extrapolated_share == pytest.approx(2 / 3)
    # 100 cells of 400 m² at 50 /ha; RMSE 10 /ha from 25 plots: SE = 0.04 * 10 * sqrt(100²/25 + 100)
    t = aba_map.total(np.full((10, 10), 50.0), None, 400, 10, 25)
    assert t["total"] == pytest.approx(200) and t["se"] == pytest.approx(0.4 * np.sqrt(500))
    assert t["ci_high"] - t["total"] == pytest.approx(2.0639 * t["se"], rel=1e-3)
    half = np.zeros((10, 10), bool)
    half[:5] = True
    assert aba_map.total(np.full((10, 10), 50.0), half, 400, 10, 25)["total"] == pytest.approx(100)
