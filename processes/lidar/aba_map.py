"""Area-based models applied to grid metrics: maps, extrapolation flags, totals with a CI.

A model fitted on plots (:mod:`.aba`) is only valid on cells of the plots' size (the
variance of stems/ha or volume per hectare depends on the area it is measured over)
and inside the range of metrics it was trained on; both are checked here. Totals
over a stand come with a confidence interval from the model's cross-validated error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import t as student

from .aba import Model, PlotsOutsideScan, ResolutionMismatch

AREA_TOLERANCE = 1 / 3   # cell area within [3/4, 4/3] of the plots' mean area: e.g. 400 m² plots take 17.3-23.1 m cells


def check_resolution(plot_areas_m2: Sequence[float], resolution_m: float, tolerance: float = AREA_TOLERANCE) -> None:
    """Refuse grid metrics whose cells are not the plots' size (``ResolutionMismatch``)."""
    mean = float(np.mean(plot_areas_m2))
    cell = resolution_m * resolution_m
    if not mean / (1 + tolerance) <= cell <= mean * (1 + tolerance):
        side = np.sqrt(mean)
        raise ResolutionMismatch(f"grid cells of {resolution_m:g} m ({cell:.0f} m²) do not match the plots' "
                                 f"{mean:.0f} m²: compute the grid metrics at about {side:.1f} m")


def check_coverage(plot_ids: Sequence, covered: Sequence[bool]) -> None:
    """Refuse plots that the scan does not cover (``PlotsOutsideScan``)."""
    out = [p for p, c in zip(plot_ids, covered) if not c]
    if out:
        raise PlotsOutsideScan(f"plots {out[:20]} are not inside the scan's footprint: their metrics would describe "
                               "another area (remove them or fit on the scan that covers them)")


@dataclass
class Prediction:
    values: np.ndarray          # (rows, cols) attribute per hectare, NaN where no metrics
    extrapolated: np.ndarray    # (rows, cols) bool: a metric the model reads is outside its training range

    @property
    def extrapolated_share(self) -> float:
        valid = np.isfinite(self.values)
        return float(self.extrapolated[valid].mean()) if valid.any() else 0.0


def predict_grid(model: Model, bands: np.ndarray, band_names: Sequence[str]) -> Prediction:
    """Predict every cell of grid metrics ``bands`` (n_bands, rows, cols; NaN = no data).

    Cells whose metrics are all NaN (outside the scan) stay NaN; a cell is flagged as
    extrapolated when one of the model's ``range_metrics`` lies outside the plots' range.
    """
    names = list(band_names)
    missing = [m for m in model.metrics if m not in names]
    if missing:
        raise ResolutionMismatch(f"the grid metrics lack {missing}; recompute them with the current engine")
    shape = bands.shape[1:]
    X = np.stack([np.asarray(bands[names.index(m)], np.float64).ravel() for m in model.metrics], axis=1)
    valid = np.isfinite(X).all(axis=1)
    out = np.full(X.shape[0], np.nan)
    if valid.any():
        out[valid] = model.predict(X[valid])
    flag = np.zeros(X.shape[0], bool)
    for m in model.range_metrics:
        lo, hi = model.training_range[m]
        v = X[:, model.metrics.index(m)]
        flag |= valid & ((v < lo) | (v > hi))
    return Prediction(out.reshape(shape), flag.reshape(shape))


def total(values: np.ndarray, mask: np.ndarray | None, cell_area_m2: float, rmse: float, n_plots: int,
          level: float = 0.95, share: np.ndarray | None = None) -> dict:
    """Total of a per-hectare attribute over the cells of ``mask`` with its confidence interval.

    total = Σ wᵢ ŷᵢ · a  (a = cell area in ha, wᵢ the share of cell i inside the scan's
    footprint, 1 when ``share`` is not given; N = Σ wᵢ cells). Its standard error is

        SE = a · RMSE · sqrt(N² / n + N)

    with RMSE the cross-validated error of one plot-sized cell and n the number of plots:
    the first term is the model's error shared by every cell (the error of a mean
    estimated from n plots, as in model-assisted estimation with a full-coverage auxiliary,
    Särndal et al. 1992, finite-population correction ignored: conservative), the second
    the independent residual error of each cell. The interval is total ± t(n-1) · SE.
    """
    v = values if mask is None else np.where(mask, values, np.nan)
    ok = np.isfinite(v)
    w = np.where(ok, 1.0 if share is None else share, 0.0)
    N = float(w.sum())
    a = cell_area_m2 / 10_000
    tot = float(np.sum(np.where(ok, v, 0.0) * w) * a)
    se = a * rmse * np.sqrt(N * N / max(n_plots, 1) + N)
    q = float(student.ppf(0.5 + level / 2, max(n_plots - 1, 1)))
    return {"total": tot, "se": float(se), "ci_low": tot - q * se, "ci_high": tot + q * se, "level": level,
            "cells": int(ok.sum()), "area_ha": N * a, "mean_per_ha": tot / (N * a) if N else None,
            "formula": "SE = a·RMSE·sqrt(N²/n + N); CI = total ± t(n-1)·SE"}


def footprint_share(footprint, transform, shape, k: int = 10) -> np.ndarray:
    """Share of each cell of a grid (``transform``, ``shape``) inside ``footprint`` (a shapely
    geometry in the grid's CRS), from a ``k`` x ``k`` sub-cell raster of it."""
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    fine = transform @ Affine.scale(1 / k)
    inside = rasterize([footprint], out_shape=(shape[0] * k, shape[1] * k), transform=fine, fill=0,
                       default_value=1, dtype="uint8")
    return inside.reshape(shape[0], k, shape[1], k).mean(axis=(1, 3))
