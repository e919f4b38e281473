"""The engine's defaults against known truth on both families of forests, beside the naive pipeline.

The project's own simulator (generated here) and the independent family in
``../shared/data/truth`` (skipped when absent), scored by one rule
(``processes.lidar.accuracy``).  The thresholds are what the defaults measured
(bench/accuracy.py) with a small margin, so a change that loses accuracy on either
family fails here; where they fall short of issue 13's bars the comment says so.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from processes.lidar.accuracy import engine_products, from_simulation, load_shared, naive_products, score
from processes.lidar.synthetic import HARD, make_forest, write_las

TRUTH = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "truth"
PROJECT = {"own-open": ("open", "hilly", 20, {}), "own-dense-d8": ("dense", "hilly", 8, {}),
           "own-two-layer": ("two_layer", "hilly", 20, {}), "own-hard-dense-d8": ("dense", "hilly", 8, HARD)}
SHARED = ["open-moderate-d20", "open-flat-d8", "dense-steep-d20", "dense-steep-d20-noclass", "dense-moderate-d8",
          "multilayer-moderate-d20"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """(engine, naive) scores by forest name, computed once."""
    work = tmp_path_factory.mktemp("accuracy")
    cache: dict[str, tuple[dict, dict]] = {}

    def get(name: str):
        if name not in cache:
            if name in PROJECT:
                kind, terrain, density, hard = PROJECT[name]
                pts, truth = make_forest(kind, terrain=terrain, density=density, seed=21, size=150.0, **hard)
                truth = from_simulation(name, truth, [write_las(work / f"{name}.laz", pts)])
            else:
                if not (TRUTH / name / "truth.json").exists():
                    pytest.skip(f"../shared/data/truth/{name} not present")
                truth = load_shared(TRUTH / name)
            e, n = score(engine_products(truth, work), truth), score(naive_products(truth), truth)
            print(f"{name}: engine {_fmt(e)}\n{name}: naive  {_fmt(n)}")
            cache[name] = (e, n)
        return cache[name]

    return get


def _fmt(s: dict) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float))


# (forest, F1 at least, CHM RMSE at most): measured 0.993/0.40, 0.835/1.12, 0.991/1.53,
# hard dense 8 pts/m² 0.758/1.21 (own);
# 0.999/0.85, 0.996/1.06, 0.810/0.84, 0.778/1.12, 0.979/1.09 (independent), with the CHM
# averaged over 0.75 point spacings (surface.pitfree.smooth; 1.54 / 1.52 / 1.15 m before
# on the independent 8 pts/m² and two-layer stands).
# Issue 13's bars not met: dense F1 >= 0.88 (0.78-0.87 measured) and CHM <= 1.0 m at
# 8 points/m² on the independent family and on the own two-layer stand.
# Issue 29 (tops on the peaks before the cliff fill, windows measured in metres, no two tops
# within 1.5 m): the own dense 8 pts/m² stands 0.835 -> 0.814 and 0.758 -> 0.784 (hard), the
# independent dense 20 pts/m² 0.810 -> 0.799, 8 pts/m² 0.778 -> 0.799, two-layer 0.979 -> 0.984;
# the real bcts tiles stable under thinning and cell changes (bench/consistency.py).
BARS = [("own-open", 0.97, 0.6), ("own-dense-d8", 0.80, 1.3), ("own-two-layer", 0.96, 1.7),
        ("own-hard-dense-d8", 0.73, 1.4),
        ("open-moderate-d20", 0.97, 1.0), ("open-flat-d8", 0.97, 1.25), ("dense-steep-d20", 0.78, 1.0),
        ("dense-moderate-d8", 0.75, 1.3), ("multilayer-moderate-d20", 0.95, 1.25)]


@pytest.mark.parametrize("name,f1,chm", BARS)
def test_trees_and_chm_against_truth_and_naive(scored, name, f1, chm):
    e, n = scored(name)
    assert e["f1"] >= f1
    assert e["chm_rmse"] <= chm
    assert e["chm_rmse"] < 0.75 * n["chm_rmse"]  # clearly better than max-binning
    assert e["height_rmse"] < n["height_rmse"]
    # open and layered stands: clearly better.  Dense: within 0.02 of the naive 2.5 m window
    # (what a closed canopy needs; the engine's window narrows to about it there) -- not
    # better, which issue 13 asks and this change does not achieve (0.835 vs 0.850 measured
    # on the own dense 8 pts/m² stand, 0.810 vs 0.790 on the independent dense one)
    # measured since issue 29: 0.814 vs 0.845 and 0.784 vs 0.820 on the own dense 8 pts/m² stands
    assert e["f1"] >= n["f1"] + (0.03 if "dense" not in name else -0.04)


@pytest.mark.parametrize("name", ["own-open", "open-moderate-d20", "multilayer-moderate-d20", "open-flat-d8"])
def test_apex_height_removes_the_highest_returns_bias(scored, name):
    e, _ = scored(name)
    # the highest return lies below the apex (-0.13 own ... -0.92 m independent measured);
    # the fitted cone's apex: bias -0.04 ... +0.23 m, RMSE 0.27-0.48 m on these four
    assert e["height_bias"] < 0
    assert abs(e["apex_bias"]) <= 0.3
    assert e["apex_rmse"] <= 0.6
    assert e["apex_rmse"] <= e["height_rmse"] + 0.05


def test_two_layer_understory_is_partly_found(scored):
    e, _ = scored("own-two-layer")
    assert e["understory_recall"] >= 0.40  # 0.48 measured; the independent two-layer stand gives 0.19 (bar 0.40 unmet)


# issue 13's bars: 0.05 m with the file's ground class, 0.15 m when the engine classifies it on
# steep terrain under dense canopy (0.021 / 0.021 / 0.046 / 0.014 m measured with the 0.5 m DTM)
@pytest.mark.parametrize("name,bar", [("open-moderate-d20", 0.05), ("dense-steep-d20", 0.05),
                                      ("dense-steep-d20-noclass", 0.08), ("own-open", 0.05)])
def test_dtm_against_true_terrain(scored, name, bar):
    e, _ = scored(name)
    assert e["dtm_rmse"] <= bar


@pytest.mark.parametrize("name", ["own-open", "open-moderate-d20"])
def test_crowns_overlap_true_crowns(scored, name):
    e, _ = scored(name)
    assert e["crown_iou"] >= 0.7  # 0.84 / 0.87 measured
    assert abs(e["crown_area_error"]) <= 0.3
