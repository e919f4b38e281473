"""Area-based approach (ABA): models of field-plot attributes from LiDAR metrics.

Foresters measure a few dozen field plots (stems/ha, basal area, volume...), the
same LiDAR metrics are computed over each plot and over every grid cell of the
forest, and a model fitted on the plots predicts every cell (Næsset 2002). This
module fits such models and says honestly how good they are:

- ``linear``: ordinary least squares on a few metrics picked by best-subset
  selection (BIC), optionally on the log scale (``log=True``: ln y on ln x, the
  power-law form of Næsset 2002, back-transformed with Duan's smearing factor);
- ``rf``: a random forest (scikit-learn) on every candidate metric.

Validation is cross-validation in which the *whole* procedure (selection
included) is repeated on each training fold, so the error is that of the method,
not the optimistic error of the model chosen on all plots. Models serialise to
JSON plus, for forests, an ``.npz`` blob of the trees' node arrays (no pickle:
a stored model is data, loading it runs no code, and it does not depend on the
scikit-learn version that fitted it). Prediction, extrapolation flags and totals
are in :mod:`.aba_map`.

No library does this end to end for LiDAR plots (lidR stops at metrics), so the
selection and serialisation are written here; the regression and the forest
are numpy's and scikit-learn's.
"""
from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidParameter, LidarError
from .jit import kernel
from .metrics import Z_METRICS

# Height and cover metrics: what the ABA literature selects from. Intensity (uncalibrated,
# sensor- and flight-dependent), return counts and point count `n` (follow the flight's
# overlap, not the forest) and rumple (NaN without a surface) are left out by default.
DEFAULT_METRICS: tuple[str, ...] = tuple(Z_METRICS) + ("cover", "gap", "lai")
MAX_METRICS = 3          # ABA models in the literature use 2-4 metrics (Næsset 2002; White et al. 2013)
PLOTS_PER_METRIC = 10    # the one-in-ten rule of thumb: at least 10 plots per fitted metric
MAX_VIF = 10.0           # variance inflation factor: subsets of collinear metrics (zq80 with zq85) give unstable
                         # coefficients that explode off the plots' range; VIF 10 is the usual limit (|r| 0.95 for two)
KFOLD = 10
RF_TREES = 200           # forest error is flat well before 200 trees at tens to thousands of plots
RF_MIN_LEAF = 5          # R randomForest's nodesize for regression, the usual ABA setting
RF_MAX_FEATURES = 1 / 3  # R randomForest's mtry = p/3 for regression


class TooFewPlots(InvalidParameter):
    """Not enough plots for the number of metrics asked (one-in-ten rule) or for validation."""


class ResolutionMismatch(InvalidParameter):
    """Grid metrics computed over cells whose area differs from the plots' area."""


class PlotsOutsideScan(LidarError):
    """Some plots are not (entirely) covered by the scan: their metrics describe another area."""


@dataclass
class Model:
    """A fitted model of one attribute, serialisable as JSON (``to_dict``) + optional blob."""

    attribute: str
    method: str                      # "linear" or "rf"
    metrics: list[str]               # metrics the model reads, in order
    log: bool = False
    intercept: float = 0.0
    coefficients: list[float] = field(default_factory=list)
    smearing: float = 1.0            # Duan's back-transform factor (log models)
    training_range: dict[str, list[float]] = field(default_factory=dict)
    range_metrics: list[str] = field(default_factory=list)   # metrics checked for extrapolation
    importance: dict[str, float] = field(default_factory=dict)
    forest: dict[str, np.ndarray] | None = None              # rf: concatenated node arrays

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for rows of ``X`` (columns = ``self.metrics``); NaN rows give NaN."""
        X = np.asarray(X, np.float64)
        if self.method == "rf":
            bad = ~np.isfinite(X).all(axis=1)
            out = _forest_predict(np.where(np.isfinite(X), X, 0.0), **self.forest)
            out[bad] = np.nan
            return out
        Z = _log_x(X, self.training_range, self.metrics) if self.log else X
        eta = self.intercept + Z @ np.asarray(self.coefficients, np.float64)
        return np.exp(eta) * self.smearing if self.log else eta

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("attribute", "method", "metrics", "log", "intercept", "coefficients",
                                            "smearing", "training_range", "range_metrics", "importance")}
        return d

    def blob(self) -> bytes | None:
        """The forest's node arrays as ``.npz`` bytes (None for linear models)."""
        if self.forest is None:
            return None
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.forest)
        return buf.getvalue()

    @staticmethod
    def from_dict(d: dict[str, Any], blob: bytes | None = None) -> "Model":
        m = Model(**{k: d[k] for k in ("attribute", "method", "metrics", "log", "intercept", "coefficients",
                                        "smearing", "training_range", "range_metrics", "importance")})
        if m.method == "rf":
            if blob is None:
                raise InvalidParameter("a random forest model needs its node arrays")
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                m.forest = {k: z[k] for k in z.files}
        return m


def _log_x(X: np.ndarray, ranges: dict, names: list[str]) -> np.ndarray:
    """ln of metrics, clipped below at the training minimum (cells beyond it are flagged anyway)."""
    lo = np.array([ranges[n][0] for n in names])
    return np.log(np.maximum(X, lo))


def check_plots(n_plots: int, max_metrics: int) -> None:
    """Refuse a fit the data cannot support: ``PLOTS_PER_METRIC`` plots per metric."""
    if n_plots < PLOTS_PER_METRIC:
        raise TooFewPlots(f"{n_plots} plots: at least {PLOTS_PER_METRIC} are needed to fit and validate a model")
    if max_metrics < 1:
        raise InvalidParameter("max_metrics must be at least 1")
    if max_metrics > n_plots // PLOTS_PER_METRIC:
        raise TooFewPlots(f"{n_plots} plots support at most {n_plots // PLOTS_PER_METRIC} metrics "
                          f"({PLOTS_PER_METRIC} plots per metric), not {max_metrics}")


def usable_metrics(table: dict[str, np.ndarray], names=DEFAULT_METRICS) -> list[str]:
    """Candidate metrics present, finite on every plot and not constant."""
    out = []
    for n in names:
        v = table.get(n)
        if v is None:
            continue
        v = np.asarray(v, np.float64)
        if np.isfinite(v).all() and np.ptp(v) > 0:
            out.append(n)
    return out


def fit(y: np.ndarray, table: dict[str, np.ndarray], *, attribute: str = "y", method: str = "linear",
        log: bool = False, max_metrics: int | None = None, candidates=DEFAULT_METRICS, seed: int = 0) -> Model:
    """Fit one attribute's model on plots.

    Parameters
    ----------
    y : array (n_plots,)
        The attribute measured on each plot (per hectare).
    table : dict name -> array (n_plots,)
        The plots' LiDAR metrics.
    method : {"linear", "rf"}
    log : bool
        Linear models only: fit ln y on ln metrics (y and the metrics must be positive).
    max_metrics : int, optional
        Largest subset tried (linear): default ``min(MAX_METRICS, n_plots // 10)``.
    candidates : names of metrics to select from (``DEFAULT_METRICS``).
    """
    y = np.asarray(y, np.float64)
    n = len(y)
    if not np.isfinite(y).all():
        raise InvalidParameter(f"{attribute}: every plot needs a finite value")
    k = max_metrics if max_metrics is not None else min(MAX_METRICS, max(n // PLOTS_PER_METRIC, 1))
    check_plots(n, k if method == "linear" else 1)
    names = usable_metrics(table, candidates)
    if log:
        if method != "linear":
            raise InvalidParameter("log applies to linear models")
        if (y <= 0).any():
            raise InvalidParameter(f"{attribute}: a log model needs positive values on every plot")
        names = [m for m in names if (np.asarray(table[m]) > 0).all()]
    if not names:
        raise InvalidParameter("no usable metric: every candidate is missing, NaN on some plot or constant")
    X = np.column_stack([np.asarray(table[m], np.float64) for m in names])
    ranges = {m: [float(X[:, i].min()), float(X[:, i].max())] for i, m in enumerate(names)}
    if method == "linear":
        return _fit_linear(y, X, names, ranges, attribute, log, k)
    if method == "rf":
        return _fit_rf(y, X, names, ranges, attribute, seed)
    raise InvalidParameter(f"method must be 'linear' or 'rf', not {method!r}")


def _fit_linear(y, X, names, ranges, attribute, log, k) -> Model:
    Z = np.log(X) if log else X
    t = np.log(y) if log else y
    cols = best_subset(Z, t, k)
    A = np.column_stack([np.ones(len(t)), Z[:, cols]])
    beta, *_ = np.linalg.lstsq(A, t, rcond=None)
    smear = float(np.mean(np.exp(t - A @ beta))) if log else 1.0
    used = [names[c] for c in cols]
    return Model(attribute, "linear", used, log, float(beta[0]), [float(b) for b in beta[1:]], smear,
                 {m: ranges[m] for m in used}, used)


def best_subset(X: np.ndarray, y: np.ndarray, k: int) -> list[int]:
    """Columns of the subset of 1..k metrics with the lowest BIC, subsets with a variance
    inflation factor above ``MAX_VIF`` excluded. Every subset of a size is solved at once (batched normal
    equations on standardised metrics), so 4,000 subsets of 3 among 30 take milliseconds."""
    n, p = X.shape
    sd = X.std(axis=0)
    S = np.column_stack([np.ones(n), (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1)])
    G, b, yy = S.T @ S, S.T @ y, float(y @ y)
    R = np.corrcoef(X, rowvar=False) if p > 1 else np.ones((1, 1))
    best, best_bic = [0], np.inf
    for s in range(1, min(k, p) + 1):
        combos = np.array(list(itertools.combinations(range(p), s)), np.int64)
        if s > 1:   # VIF_j = diag(inverse of the subset's correlation matrix)
            Rs = R[combos[:, :, None], combos[:, None, :]]
            ok = np.linalg.cond(Rs) < 1e12
            vif = np.full(len(combos), np.inf)
            vif[ok] = np.diagonal(np.linalg.inv(Rs[ok]), axis1=1, axis2=2).max(axis=1)
            combos = combos[vif <= MAX_VIF]
            if not len(combos):
                break
        idx = np.column_stack([np.zeros(len(combos), np.int64), combos + 1])
        Gs = G[idx[:, :, None], idx[:, None, :]] + 1e-9 * n * np.eye(s + 1)
        bs = b[idx]
        beta = np.linalg.solve(Gs, bs[..., None])[..., 0]
        rss = np.maximum(yy - np.einsum("ij,ij->i", beta, bs), 1e-12 * max(yy, 1e-300))
        bic = n * np.log(rss / n) + (s + 1) * np.log(n)
        i = int(np.argmin(bic))
        if bic[i] < best_bic:
            best_bic, best = float(bic[i]), [int(c) for c in combos[i]]
    return best


def _fit_rf(y, X, names, ranges, attribute, seed) -> Model:
    from sklearn.ensemble import RandomForestRegressor

    rf = RandomForestRegressor(n_estimators=RF_TREES, min_samples_leaf=RF_MIN_LEAF, max_features=RF_MAX_FEATURES,
                               random_state=seed, n_jobs=1).fit(X, y)
    imp = dict(zip(names, (float(v) for v in rf.feature_importances_)))
    # extrapolation is checked on the metrics that carry 90 % of the importance: the others hardly move a prediction
    order = sorted(names, key=lambda m: -imp[m])
    cum = np.cumsum([imp[m] for m in order])
    key = order[: int(np.searchsorted(cum, 0.9)) + 1]
    return Model(attribute, "rf", list(names), False, training_range=ranges, range_metrics=key,
                 importance=imp, forest=_forest_arrays(rf))


def _forest_arrays(rf) -> dict[str, np.ndarray]:
    """Every tree's nodes in one set of arrays (children indices made global)."""
    left, right, feat, thr, val, roots = [], [], [], [], [], []
    off = 0
    for est in rf.estimators_:
        t = est.tree_
        roots.append(off)
        leaf = t.children_left < 0
        left.append(np.where(leaf, -1, t.children_left + off))
        right.append(np.where(leaf, -1, t.children_right + off))
        feat.append(t.feature)
        thr.append(t.threshold)
        val.append(t.value.reshape(t.node_count, -1)[:, 0])
        off += t.node_count
    cat = np.concatenate
    return {"left": cat(left).astype(np.int32), "right": cat(right).astype(np.int32),
            "feature": cat(feat).astype(np.int32), "threshold": cat(thr), "value": cat(val),
            "roots": np.array(roots, np.int32)}


def _forest_predict(X, left, right, feature, threshold, value, roots) -> np.ndarray:
    return _walk(np.ascontiguousarray(X), left, right, feature, threshold, value, roots)


@kernel
def _walk(X, left, right, feature, threshold, value, roots):  # pragma: no cover
    """Mean over trees of the leaf each row reaches (sklearn: go left when x <= threshold).
    Tree by tree over every row, as scikit-learn does: one tree's nodes stay in cache."""
    n = X.shape[0]
    out = np.zeros(n)
    for r in roots:
        for i in range(n):
            node = r
            while left[node] >= 0:
                node = left[node] if X[i, feature[node]] <= threshold[node] else right[node]
            out[i] += value[node]
    return out / len(roots)


@dataclass
class Validation:
    """Cross-validated accuracy of a fitting procedure, beside a mean-only baseline."""

    scheme: str
    rmse: float
    rmse_pct: float
    bias: float
    bias_pct: float
    r2: float
    baseline_rmse: float
    baseline_rmse_pct: float
    observed: list[float]
    predicted: list[float]

    def to_dict(self) -> dict[str, Any]:
        """As stored and served: JSON has no NaN (an R² of plots that all measure the same is null)."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in self.__dict__.items()}


def cross_validate(y: np.ndarray, table: dict[str, np.ndarray], *, folds: int | str = KFOLD, seed: int = 0,
                   **fit_args) -> Validation:
    """k-fold (``folds`` int, shuffled with ``seed``) or leave-one-out (``folds="loo"``) validation.

    Each training fold repeats the whole fit (metric selection included). RMSE % and bias %
    are relative to the mean observed value; R² is 1 - SSE/SST of the held-out
    predictions; the baseline predicts each held-out plot by its training fold's mean.
    """
    y = np.asarray(y, np.float64)
    n = len(y)
    # the candidates are those the fit on every plot may choose: a metric missing on one plot
    # (finite on the others) would be chosen by the folds that leave that plot out
    table = {m: table[m] for m in usable_metrics(table, fit_args.get("candidates", DEFAULT_METRICS))}
    if folds == "loo":
        parts = np.arange(n)
    else:
        folds = int(folds)
        if not 2 <= folds <= n:
            raise InvalidParameter(f"folds must be between 2 and the number of plots ({n})")
        parts = np.random.default_rng(seed).permutation(n) % folds
    pred = np.empty(n)
    base = np.empty(n)
    for f in np.unique(parts):
        test = parts == f
        sub = {k: np.asarray(v)[~test] for k, v in table.items()}
        kwargs = dict(fit_args)
        if "max_metrics" not in kwargs or kwargs["max_metrics"] is None:
            kwargs["max_metrics"] = min(MAX_METRICS, max(n // PLOTS_PER_METRIC, 1))  # same subset size as on all plots
        kwargs["max_metrics"] = max(1, min(kwargs["max_metrics"], int((~test).sum()) // PLOTS_PER_METRIC))
        model = fit(y[~test], sub, seed=seed, **kwargs)
        pred[test] = model.predict(np.column_stack([np.asarray(table[m], np.float64)[test] for m in model.metrics]))
        base[test] = y[~test].mean()
    return _scores("loo" if folds == "loo" else f"{folds}-fold", y, pred, base)


def _scores(scheme, y, pred, base) -> Validation:
    mean = float(y.mean())
    err = pred - y
    rmse = float(np.sqrt(np.mean(err ** 2)))
    brmse = float(np.sqrt(np.mean((base - y) ** 2)))
    sst = float(np.sum((y - mean) ** 2))
    r2 = 1 - float(np.sum(err ** 2)) / sst if sst > 0 else float("nan")
    pct = 100 / mean if mean else float("nan")
    return Validation(scheme, rmse, rmse * pct, float(err.mean()), float(err.mean()) * pct, r2, brmse, brmse * pct,
                      [float(v) for v in y], [float(v) for v in pred])
