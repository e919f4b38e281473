// A form for any process, generated from its OGC process description (/processes/{id}):
// numbers with their bounds and defaults, booleans, enums, arrays, nested objects and the
// algorithm families (`oneOf` variants named by their `algorithm`). Only what differs from a
// default is sent, so the server's defaults apply to the rest.
import { apiJSON } from "./api.js";
import { start } from "./jobs.js";
import { esc } from "./format.js";

let hooks = { scans: () => [] };
let description = null;
let fields = [];           // [{name, get()}] of the current form
let chosenScan = "";       // the scan chosen ("Run…" or the form's select), kept when the form is redrawn
let formSeq = 0;           // the latest loadForm: an earlier one that answers later draws nothing
let runs = [];             // the runs to compare: [{id, scan, process, created, label}], newest first

export async function initProcesses(callbacks) {
  hooks = { ...hooks, ...callbacks };
  const select = document.getElementById("proc-select");
  select.addEventListener("change", () => loadForm(select.value));
  document.getElementById("proc-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  document.getElementById("proc-form").addEventListener("change", () => showTarget());
  await listProcesses();
}

export async function listProcesses() {
  const select = document.getElementById("proc-select");
  let doc;
  try {
    doc = await apiJSON("/processes?f=json&limit=100");
  } catch (err) {
    return;
  }
  const wanted = select.value || "forest-inventory";
  select.innerHTML = "";
  for (const p of doc.processes || []) {
    if (p.id === "inventory-tile") continue;     // an internal part of forest-inventory
    const option = document.createElement("option");
    option.value = p.id;
    option.textContent = p.title || p.id;
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === wanted)) select.value = wanted;
  await loadForm(select.value);
}

function variantName(schema) {
  const alg = schema.properties && schema.properties.algorithm;
  if (alg) return alg.const ?? (alg.enum || [])[0];
  return schema.title || "";
}

function isAlgorithmFamily(schema) {
  const variants = schema.oneOf || [schema];
  return variants.some((v) => v.type === "object" && v.properties && v.properties.algorithm) &&
    variants.every((v) => v.type === "object" || v.type === "null");
}

function label(text, desc, control, hint = "") {
  const wrap = document.createElement("label");
  wrap.className = "field";
  wrap.title = desc || "";
  wrap.innerHTML = `<span class="field-name">${esc(text)}${hint ? ` <span class="muted">${esc(hint)}</span>` : ""}</span>`;
  wrap.append(control);
  return wrap;
}

function bounds(schema) {
  const lo = schema.minimum ?? schema.exclusiveMinimum;
  const hi = schema.maximum ?? schema.exclusiveMaximum;
  if (lo === undefined && hi === undefined) return "";
  return `${lo ?? "…"}–${hi ?? "…"}`;
}

/** A control for `schema`; returns {el, get} where get() is the value to send or undefined. */
function widget(name, schema, desc, { required = false, path = name } = {}) {
  if ((schema.oneOf && isAlgorithmFamily(schema)) || (schema.type === "object" && schema.properties?.algorithm)) {
    return familyWidget(name, schema, desc, path);
  }
  if (schema.oneOf) {
    const first = schema.oneOf.find((v) => v.type !== "null") || {};
    return widget(name, { ...first, default: schema.default, description: schema.description }, desc,
                  { required, path });
  }
  const def = schema.default;
  if (name === "scan" && schema.type === "integer") {
    const select = document.createElement("select");
    select.name = path;
    select.required = true;
    fillScans(select);
    select.addEventListener("change", () => { chosenScan = select.value; });
    return { el: label("Scan", desc, select), get: () => (select.value ? Number(select.value) : undefined) };
  }
  if (["before", "after"].includes(name) && schema.type === "string") {     // compare: runs by name
    const select = document.createElement("select");
    select.name = path;
    select.required = true;
    select.dataset.run = name;
    fillRuns(select);
    return { el: label(name === "before" ? "Before (run)" : "After (run)", desc, select),
             get: () => select.value || undefined };
  }
  if (schema.type === "number" || schema.type === "integer") {
    const input = document.createElement("input");
    input.type = "number";
    input.name = path;
    input.step = schema.type === "integer" ? "1" : "any";
    if (schema.minimum !== undefined) input.min = String(schema.minimum);
    if (schema.maximum !== undefined) input.max = String(schema.maximum);
    if (def !== undefined && def !== null) input.value = String(def);
    else if (!required) input.placeholder = "auto";  // the process chooses (its description says how)
    input.required = required;
    const ex = schema.exclusiveMinimum;
    input.addEventListener("input", () => {
      input.setCustomValidity(ex !== undefined && input.value !== "" && Number(input.value) <= ex
        ? `must be more than ${ex}` : "");
    });
    return {
      el: label(name, desc || schema.description, input, bounds(schema)),
      get: () => (input.value === "" || (!required && Number(input.value) === def) ? undefined : Number(input.value)),
    };
  }
  if (schema.type === "boolean") {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = path;
    box.checked = Boolean(def);
    const el = label(name, desc || schema.description, box);
    el.classList.add("field-bool");
    return { el, get: () => (box.checked === Boolean(def) && !required ? undefined : box.checked) };
  }
  if (schema.type === "string" && schema.enum) {
    const select = document.createElement("select");
    select.name = path;
    for (const v of schema.enum) select.append(new Option(v, v));
    if (def !== undefined) select.value = def;
    return { el: label(name, desc || schema.description, select),
             get: () => (select.value === def && !required ? undefined : select.value) };
  }
  if (schema.type === "array") {
    const input = document.createElement("input");
    input.name = path;
    input.placeholder = schema.items && schema.items.type === "integer" ? "ids, e.g. 3, 4" : "numbers, e.g. 3, 1.5";
    if (Array.isArray(def)) input.value = def.join(", ");
    return {
      el: label(name, desc || schema.description, input, schema.minItems ? `${schema.minItems}+ values` : ""),
      get: () => {
        const values = input.value.split(/[\s,]+/).filter(Boolean).map(Number);
        if (!values.length || (Array.isArray(def) && values.join() === def.join())) return undefined;
        return values;
      },
    };
  }
  if (schema.type === "object" && schema.properties) return objectWidget(name, schema, desc, path);
  const input = document.createElement("input");
  input.name = path;
  if (def !== undefined && def !== null) input.value = String(def);
  return { el: label(name, desc || schema.description, input),
           get: () => (input.value === "" || input.value === String(def) ? undefined : input.value) };
}

function objectWidget(name, schema, desc, path) {
  const box = document.createElement("fieldset");
  box.innerHTML = `<legend title="${esc(schema.description || desc || "")}">${esc(name)}</legend>`;
  const parts = [];
  for (const [key, sub] of Object.entries(schema.properties)) {
    if (key === "algorithm") continue;
    const w = widget(key, sub, sub.description, { path: `${path}.${key}` });
    parts.push([key, w]);
    box.append(w.el);
  }
  return {
    el: box,
    get: () => {
      const out = {};
      for (const [key, w] of parts) {
        const v = w.get();
        if (v !== undefined) out[key] = v;
      }
      return Object.keys(out).length ? out : undefined;
    },
  };
}

function familyWidget(name, schema, desc, path) {
  const variants = schema.oneOf || [schema];
  const box = document.createElement("fieldset");
  box.className = "family";
  box.dataset.family = name;
  const select = document.createElement("select");
  select.name = `${path}.algorithm`;
  const leftOut = /left out: (\w+)/.exec(schema.description || desc || "");
  const objects = variants.filter((v) => v.type === "object");
  const fallback = leftOut ? leftOut[1] : variantName(objects[0]);
  const forms = new Map();
  for (const v of variants) {
    const key = v.type === "null" ? "none" : variantName(v);
    select.append(new Option(v.type === "null" ? "none" : key, key));
    if (v.type === "null") continue;
    const sub = objectWidget(key, v, v.description, `${path}.${key}`);
    sub.el.classList.add("variant");
    sub.el.querySelector("legend").textContent = `${key} parameters`;
    sub.el.title = v.description || "";
    forms.set(key, sub);
  }
  select.value = fallback;
  const head = label(name, desc, select);
  box.append(head);
  for (const [key, sub] of forms) box.append(sub.el);
  const show = () => {
    for (const [key, sub] of forms) sub.el.hidden = key !== select.value;
  };
  select.addEventListener("change", show);
  show();
  return {
    el: box,
    get: () => {
      if (select.value === "none") return null;
      const params = forms.get(select.value)?.get();
      if (select.value === fallback && !params) return undefined;
      return { algorithm: select.value, ...(params || {}) };
    },
  };
}

export async function loadForm(id) {
  const form = document.getElementById("proc-fields");
  const about = document.getElementById("proc-about");
  document.getElementById("proc-error").textContent = "";
  if (!id) return;
  const seq = ++formSeq;
  const described = await apiJSON(`/processes/${id}?f=json`);
  if (seq !== formSeq) return;          // another form was asked for meanwhile
  description = described;
  about.textContent = description.description || "";
  form.innerHTML = "";
  fields = [];
  const advanced = document.createElement("details");
  advanced.innerHTML = "<summary>Algorithms and advanced settings</summary>";
  for (const [name, input] of Object.entries(description.inputs || {})) {
    const required = (input.minOccurs ?? 1) >= 1;
    const w = widget(name, input.schema || {}, input.description || input.title, { required });
    const title = w.el.querySelector(":scope > .field-name") || w.el.querySelector(":scope > label > .field-name");
    if (title && input.title && name !== "scan") title.firstChild.textContent = `${input.title} `;
    fields.push({ name, get: w.get, required });
    const complex = input.schema && (input.schema.oneOf || input.schema.type === "object");
    const rare = ["tile_size", "buffer", "plots"].includes(name);
    (complex || rare ? advanced : form).append(w.el);
  }
  if (advanced.children.length > 1) form.append(advanced);
  showTarget();
  document.body.dataset.formReady = id;
  if (form.querySelector("select[data-run]")) loadRuns();
}

const scanSelect = () => document.querySelector('#proc-fields select[name="scan"]');

/** The scan options, the chosen scan selected (else the one selected before, else the first). */
function fillScans(select) {
  const keep = chosenScan || select.value;
  select.innerHTML = "";
  for (const s of hooks.scans()) {
    select.append(new Option(`#${s.id} ${s.properties.name} (${s.properties.status})`, String(s.id)));
  }
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

/** Choose `scanId` in the form (the scans list's "Run…" button): it stays chosen while the form
 * or the scans list is drawn again, until the visitor picks another scan. */
export function selectScan(scanId) {
  chosenScan = String(scanId);
  const select = scanSelect();
  if (select) fillScans(select);
  showTarget();
}

/** The scans list changed: update the scan choices only (what the visitor typed stays). */
export function refreshScanChoices() {
  const select = scanSelect();
  if (select) fillScans(select);
  for (const runSelect of document.querySelectorAll("#proc-fields select[data-run]")) fillRuns(runSelect);
  showTarget();
}

/** What the Run button will do, in words: the process and the scan (or the runs) it runs on. */
function showTarget() {
  const box = document.getElementById("proc-target");
  const button = document.getElementById("proc-run");
  if (!description) return;
  const select = scanSelect();
  const scan = select && hooks.scans().find((s) => String(s.id) === select.value);
  const pick = (name) => document.querySelector(`#proc-fields select[data-run="${name}"]`)?.selectedOptions[0];
  box.dataset.scan = scan ? String(scan.id) : "";
  if (scan) {
    box.textContent = `Runs ${description.id} on scan #${scan.id} “${scan.properties.name}” (${scan.properties.status})`;
    button.textContent = `Run on scan #${scan.id}`;
  } else if (pick("before") || pick("after")) {
    box.textContent = `Compares ${pick("before")?.textContent || "?"} with ${pick("after")?.textContent || "?"}`;
    button.textContent = "Run";
  } else {
    box.textContent = select ? "Choose a scan" : `Runs ${description.id}`;
    button.textContent = "Run";
  }
}

function runLabel(r) {
  const scan = hooks.scans().find((s) => String(s.id) === String(r.scan_id));
  const when = (r.committed || r.created || "").replace("T", " ").slice(0, 16);
  return `scan #${r.scan_id}${scan ? ` ${scan.properties.name}` : ""} — ${r.process} ${when} — ${r.id.slice(0, 8)}`;
}

function fillRuns(select) {
  const keep = select.value;
  select.innerHTML = runs.length ? "" : '<option value="">no run with a CHM yet</option>';
  for (const r of runs) select.append(new Option(r.label, r.id));
  if (runs.some((r) => r.id === keep)) select.value = keep;
  else if (runs.length) select.value = runs[Math.min(runs.length - 1, select.dataset.run === "before" ? 1 : 0)].id;
}

/** The runs with a canopy height model (what compare reads) of every scan listed, newest first. */
export async function loadRuns() {
  const found = [];
  for (const s of hooks.scans().filter((x) => x.properties.status === "ready")) {
    try {
      const doc = await apiJSON(`/scans/${s.id}/runs?limit=100`);
      found.push(...(doc.runs || []).filter((r) => (r.products || []).includes("chm")));
    } catch (err) { /* not readable any more */ }
  }
  found.sort((a, b) => String(b.committed || b.created).localeCompare(String(a.committed || a.created)));
  runs = found.map((r) => ({ id: r.id, label: runLabel(r) }));
  for (const select of document.querySelectorAll("#proc-fields select[data-run]")) fillRuns(select);
  showTarget();
}

/** A job finished: the runs to compare again, when the compare form is shown. */
export function refreshRuns() {
  if (document.querySelector("#proc-fields select[data-run]")) loadRuns();
}

async function run() {
  const form = document.getElementById("proc-form");
  const error = document.getElementById("proc-error");
  error.textContent = "";
  if (!form.reportValidity()) return;
  const inputs = {};
  for (const f of fields) {
    const v = f.get();
    if (v !== undefined) inputs[f.name] = v;
  }
  try {
    await start(description.id, inputs);
  } catch (err) {
    error.textContent = err.status === 401 ? "sign in to run a process" : err.message;
  }
}
