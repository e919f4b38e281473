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

export async function initProcesses(callbacks) {
  hooks = { ...hooks, ...callbacks };
  const select = document.getElementById("proc-select");
  select.addEventListener("change", () => loadForm(select.value));
  document.getElementById("proc-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
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
    for (const s of hooks.scans()) {
      const option = document.createElement("option");
      option.value = String(s.id);
      option.textContent = `#${s.id} ${s.properties.name} (${s.properties.status})`;
      select.append(option);
    }
    return { el: label("Scan", desc, select), get: () => (select.value ? Number(select.value) : undefined),
             set: (v) => { select.value = String(v); } };
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
  description = await apiJSON(`/processes/${id}?f=json`);
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
  document.body.dataset.formReady = id;
}

/** Choose `scanId` in the form (from the scans list's "Run" button). */
export function selectScan(scanId) {
  const select = document.querySelector('#proc-fields select[name="scan"]');
  if (select) select.value = String(scanId);
}

/** The scans list changed: update the scan choices only (what the visitor typed stays). */
export function refreshScanChoices() {
  const select = document.querySelector('#proc-fields select[name="scan"]');
  if (!select) return;
  const keep = select.value;
  select.innerHTML = "";
  for (const s of hooks.scans()) {
    select.append(new Option(`#${s.id} ${s.properties.name} (${s.properties.status})`, String(s.id)));
  }
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
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
