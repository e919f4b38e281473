// Area-based inventory in the browser (issue 18): choose a scan and the numeric attributes its
// field plots carry, fit (plot-metrics, then fit-area-model), read each model's
// cross-validation (observed against predicted, residuals, the metrics chosen) and map it
// (predict-area-model; grid-metrics at the model's resolution first when the scan has none).
// Each step is an ordinary job in the list (jobs.execute); the prediction's COG joins the map
// with its legend as every job's raster does (viewer.js).
import { apiJSON } from "./api.js";
import { esc, num } from "./format.js";
import { execute } from "./jobs.js";

let hooks = { scans: () => [] };

export function initAreaModels(callbacks) {
  hooks = { ...hooks, ...callbacks };
  document.getElementById("aba-scan").addEventListener("change", () => loadAttributes());
  document.getElementById("aba-fit").addEventListener("click", () => fit());
  document.getElementById("aba-models").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-model]");
    if (!button) return;
    // "Map all": every model in one job (one COG, a band per attribute, as the band picker shows)
    const model = button.dataset.model === "all"
      ? [...document.querySelectorAll(".aba-model")].map((c) => Number(c.dataset.id))
      : Number(button.dataset.model);
    predict(model, button);
  });
}

/** The scans to choose from (after sign-in, a job or an upload). */
export function refreshAreaModels() {
  const select = document.getElementById("aba-scan");
  const keep = select.value;
  select.innerHTML = hooks.scans().map((s) =>
    `<option value="${esc(String(s.id))}">${esc(s.properties.name || `scan ${s.id}`)}</option>`).join("");
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  loadAttributes();
}

function status(text, state) {
  const el = document.getElementById("aba-status");
  el.textContent = text;
  el.dataset.state = state;
}

function bbox(geometry) {
  const xs = [], ys = [];
  const walk = (c) => (typeof c[0] === "number" ? (xs.push(c[0]), ys.push(c[1])) : c.forEach(walk));
  walk(geometry.coordinates);
  return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
}

/** The numeric attributes of the plots over the chosen scan, as checkboxes. */
async function loadAttributes() {
  const box = document.getElementById("aba-attributes");
  const scan = hooks.scans().find((s) => String(s.id) === document.getElementById("aba-scan").value);
  box.innerHTML = "";
  if (!scan || !scan.geometry) return;
  let page;
  try {
    page = await apiJSON(`/collections/plots/items?f=json&limit=10000&bbox=${bbox(scan.geometry).join(",")}`);
  } catch (err) {
    return;
  }
  const counts = new Map();
  for (const f of page.features || []) {
    const a = f.properties.attributes || {};
    for (const [k, v] of Object.entries(a)) if (typeof v === "number" && Number.isFinite(v)) counts.set(k, (counts.get(k) || 0) + 1);
  }
  box.dataset.plots = String((page.features || []).length);
  box.innerHTML = [...counts].sort().map(([k, n]) =>
    `<label class="check"><input type="checkbox" name="aba-attr" value="${esc(k)}"> ${esc(k)} <span class="muted">(${n} plots)</span></label>`)
    .join("") || '<span class="muted">no plot over this scan carries a numeric attribute: import field plots first</span>';
}

async function fit() {
  const scan = Number(document.getElementById("aba-scan").value);
  const attributes = [...document.querySelectorAll("input[name=aba-attr]:checked")].map((i) => i.value);
  if (!scan || !attributes.length) {
    status("choose a scan and at least one attribute", "error");
    return;
  }
  const method = document.getElementById("aba-method").value;
  const validation = document.getElementById("aba-validation").value;
  try {
    status("computing the plots' LiDAR metrics…", "running");
    const metrics = await execute("plot-metrics", { scan });
    if (metrics.job.status !== "successful") throw new Error(`plot-metrics: ${metrics.job.message}`);
    status(`fitting ${attributes.join(", ")}…`, "running");
    const fitted = await execute("fit-area-model", {
      scan, attributes, method, validation: validation === "loo" ? "loo" : Number(validation),
    });
    if (fitted.job.status !== "successful") throw new Error(fitted.job.message);
    const models = await Promise.all(fitted.results.models.map((m) => apiJSON(`/area-models/${m.id}?f=json`)));
    document.getElementById("aba-models").innerHTML = models.map(modelCard).join("") + (models.length > 1
      ? '<div class="aba-all"><button type="button" data-model="all">Map all</button> <span class="aba-map-status muted"></span></div>'
      : "");
    status(`${models.length} model(s) fitted on ${models[0].plots.length} plots`, "done");
  } catch (err) {
    status(`refused: ${(err.body && err.body.detail) || err.message}`, "refused");
  }
}

/** Observed against predicted (with the 1:1 line) and residuals against predicted, as SVG. */
function charts(observed, predicted) {
  const W = 150, H = 130, P = 22;
  const all = observed.concat(predicted);
  const lo = Math.min(...all), hi = Math.max(...all);
  const res = observed.map((o, i) => o - predicted[i]);
  const r = Math.max(...res.map(Math.abs)) || 1;
  const sx = (v) => P + ((v - lo) / (hi - lo || 1)) * (W - P - 4);
  const sy = (v) => H - P - ((v - lo) / (hi - lo || 1)) * (H - P - 4);
  const ry = (v) => (H - P) / 2 - (v / r) * ((H - P) / 2 - 4);
  const frame = (title, body) => `<svg class="aba-chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" ` +
    `aria-label="${title}"><title>${title}</title><rect x="${P}" y="2" width="${W - P - 2}" height="${H - P - 2}" fill="none" stroke="#999"/>` +
    `${body}<text x="${W / 2}" y="${H - 6}" font-size="9" text-anchor="middle">predicted</text></svg>`;
  const one = frame("observed against predicted",
    `<line class="one-to-one" x1="${sx(lo)}" y1="${sy(lo)}" x2="${sx(hi)}" y2="${sy(hi)}" stroke="#888" stroke-dasharray="3"/>` +
    predicted.map((p, i) => `<circle class="point" cx="${sx(p).toFixed(1)}" cy="${sy(observed[i]).toFixed(1)}" r="2.5" fill="#2a7"/>`).join(""));
  const two = frame("residuals against predicted",
    `<line x1="${P}" y1="${ry(0)}" x2="${W - 2}" y2="${ry(0)}" stroke="#888" stroke-dasharray="3"/>` +
    predicted.map((p, i) => `<circle class="residual" cx="${sx(p).toFixed(1)}" cy="${ry(res[i]).toFixed(1)}" r="2.5" fill="#c63"/>`).join(""));
  return one + two;
}

function modelCard(m) {
  const v = m.validation;
  const unit = m.unit ? ` ${esc(m.unit)}` : "";
  return `<div class="aba-model" data-id="${m.id}"><div><b>${esc(m.attribute)}</b> — ${esc(m.method)} on ` +
    `${esc(m.metrics.join(", "))}</div><div class="muted">${esc(v.scheme === "loo" ? "leave-one-out" : v.scheme)}: ` +
    `RMSE ${num(v.rmse, 2)}${unit} (<span class="rmse-pct">${num(v.rmse_pct, 1)}</span> %; mean-only ${num(v.baseline_rmse_pct, 1)} %), ` +
    `bias ${num(v.bias, 2)}, R² ${num(v.r2, 2)}</div>${charts(v.observed, v.predicted)}` +
    `<div><button type="button" data-model="${m.id}">Map</button> ` +
    `<span class="aba-map-status muted"></span></div></div>`;
}

/** Map one model (an id) or several (a list of ids, one job and one COG). */
async function predict(model, button) {
  const scan = Number(document.getElementById("aba-scan").value);
  const note = button.parentElement.querySelector(".aba-map-status");
  button.disabled = true;
  try {
    note.textContent = "predicting…";
    let run = await execute("predict-area-model", { model, scan });
    if (run.job.status === "failed" && /run grid-metrics with resolution ([\d.]+)/.test(run.job.message)) {
      const resolution = Number(RegExp.$1);
      note.textContent = `computing grid metrics at ${resolution} m…`;
      const grid = await execute("grid-metrics", { scan, resolution });
      if (grid.job.status !== "successful") throw new Error(`grid-metrics: ${grid.job.message}`);
      note.textContent = "predicting…";
      run = await execute("predict-area-model", { model, scan });
    }
    if (run.job.status !== "successful") throw new Error(run.job.message);
    note.dataset.state = "done";
    note.dataset.raster = String(run.results.aba.id);
    note.textContent = "mapped: " + run.results.predictions.map((p) => {
      const t = p.totals.scan;
      return `${p.attribute} total ${num(t.total, 0)} ${t.unit || ""} (${Math.round(t.level * 100)} % CI ` +
        `${num(t.ci_low, 0)}–${num(t.ci_high, 0)}), ${num(100 * p.extrapolated_share, 0)} % of cells extrapolated`;
    }).join("; ");
  } catch (err) {
    note.dataset.state = "refused";
    note.textContent = `refused: ${(err.body && err.body.detail) || err.message}`;
  } finally {
    button.disabled = false;
  }
}
