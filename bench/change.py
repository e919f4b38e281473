"""Figures of the `compare` process (processes/lidar/change.py) against known truth, beside
a naive reference run on the same CHMs and trees.

For each forest — the project's simulated stands grown and partly harvested, scanned twice
and inventoried by the engine (tests/unit/lidar/test_change.py builds them), and a forest of
the independent truth family with a harvest cut into its CHM — prints the true canopy area
lost, the area the change map finds and its error, the median height growth of the matched
trees against the truth, and the time compare() takes. The naive reference counts every cell
that was canopy and dropped (no opening, no minimum patch, no outline correction) and pairs
each later tree with its nearest earlier top within 1.5 m (not one-to-one, no height check).

    python bench/change.py                  # every forest
    python bench/change.py --only dense     # forests whose name contains a word
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from processes.lidar import change  # noqa: E402
from tests.unit.lidar.test_change import (FAMILIES, SHARED_FOREST, _engine_run, simulate_change,  # noqa: E402
                                          simulate_shared_change)


def naive(inputs: tuple, params: change.ChangeParams) -> tuple[float, float]:
    """Canopy lost as the plain count of dropped cells, growth by nearest neighbour."""
    a, ta, b, tb, tr_a, tr_b = inputs
    x, y, t = change.align(a, ta, b, tb)
    lost = np.count_nonzero(np.isfinite(x) & np.isfinite(y) & (x >= params.hmin) & (y - x <= -params.drop))
    d, i = cKDTree(np.column_stack([tr_a["x"], tr_a["y"]])).query(np.column_stack([tr_b["x"], tr_b["y"]]))
    ok = d <= 1.5
    growth = float(np.median(tr_b["height"][ok] - tr_a["height"][i[ok]])) if ok.any() else float("nan")
    return lost * t.a * t.a, growth


def row(name: str, true_lost: float, true_growth: float, inputs: tuple, params: change.ChangeParams) -> None:
    t0 = time.perf_counter()
    r = change.compare(*inputs, params)
    seconds = time.perf_counter() - t0
    lost, growth = r.areas["canopy_lost"]["m2"], r.trees["growth_median"]
    n_lost, n_growth = naive(inputs, params)
    print(f"{name:24s} {true_lost:9.1f} {lost:9.1f} {100 * (lost / true_lost - 1):+7.1f} % "
          f"{n_lost:9.1f} {100 * (n_lost / true_lost - 1):+7.1f} % | {true_growth:6.3f} {growth:6.3f} "
          f"{n_growth:6.3f} | {r.trees['matched']:5d}/{r.trees['after']:<5d} {seconds:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=[])
    args = ap.parse_args()
    params = change.ChangeParams()
    print(f"{'forest':24s} {'true m²':>9s} {'found m²':>9s} {'error':>9s} {'naive m²':>9s} {'error':>9s} | "
          f"{'growth':>6s} {'found':>6s} {'naive':>6s} | matched  compare")
    with tempfile.TemporaryDirectory(prefix="canopy-bench-change-") as tmp:
        for name, family in sorted(FAMILIES.items()):
            if args.only and not any(w in name for w in args.only):
                continue
            sim = simulate_change(*family)
            d = Path(tmp) / name
            d.mkdir()
            before, after = _engine_run(sim["before"], d / "before"), _engine_run(sim["after"], d / "after")
            inputs = (*before[:2], *after[:2], before[2], after[2])
            row(name, sim["true_lost"], float(np.median(sim["growth"])), inputs, params)
        name = f"{SHARED_FOREST.name} (CHM cut)"
        if (SHARED_FOREST / "scan.laz").exists() and (not args.only or any(w in name for w in args.only)):
            d = Path(tmp) / "shared"
            d.mkdir()
            s = simulate_shared_change(d, params)
            row(name, s["true_lost"], float(np.median(s["growth"])), s["inputs"], params)


if __name__ == "__main__":
    main()
