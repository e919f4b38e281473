"""An area model's page (GET /area-models/{id}?f=html, server/area_models/views.py): what
the model reads and its cross-validation, observed vs predicted and residuals, drawn on the
server like the scan report (no script, no external file)."""

from __future__ import annotations

from .report import TEMPLATES
from .svg import scatter_chart

_METHODS = {"linear": "linear regression", "rf": "random forest"}


def render(m: dict, base: str) -> str:
    """The page of `m`, a model as the API shows it in full (area_models.views.model_json)."""
    v = m["validation"]
    unit = f" ({m['unit']})" if m["unit"] else ""
    observed, predicted = v.get("observed", []), v.get("predicted", [])
    return TEMPLATES.get_template("area_model.html").render(
        m=m, v=v, base=base, n=len(observed), method=_METHODS.get(m["method"], m["method"]),
        scheme={"loo": "leave-one-out"}.get(v["scheme"], v["scheme"]),
        observed_predicted=scatter_chart(predicted, observed, title="observed vs predicted", identity=True,
                                         x_label=f"predicted{unit}", y_label=f"observed{unit}"),
        residuals=scatter_chart(predicted, [o - p for o, p in zip(observed, predicted)], title="residuals",
                                zero_line=True, x_label=f"predicted{unit}", y_label=f"observed − predicted{unit}"))
