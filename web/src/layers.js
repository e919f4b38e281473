// The map: plots, scan footprints, trees and crowns as vector tiles; rasters as tiles with a
// legend from their real statistics and units; a named band picker for grid metrics; pop-ups.
import maplibregl from "maplibre-gl";
import { apiJSON, currentUser, freshToken, refresh } from "./api.js";
import { esc, ladChart, metricTitle, metricUnit, num, unitSymbol, withUnit } from "./format.js";

const origin = window.location.origin;
const KIND_TITLE = { chm: "CHM", dtm: "DTM", dsm: "DSM", density: "Density", metrics: "Grid metrics",
                     aba: "Area-based prediction", chm_diff: "CHM difference", change: "Change" };
const HIDDEN = ["metrics", "chm_diff"];   // listed, not drawn at first: one surface at a time reads best
let hooks = { scanName: () => "" };

/** `scanName(id)`: the name of a scan, for the layers' titles. */
export function initLayers(callbacks) {
  hooks = { ...hooks, ...callbacks };
}
const PALETTE_NOTE = { dtm: "hillshaded", dsm: "hillshaded" };

// Tiles of private projects need the token. They are fetched through the `canopy://` protocol
// below rather than with headers set when MapLibre queues a request: the token is read when the
// request really leaves (renewed first if it is about to expire, and once more on a 401), so no
// tile ever carries an expired token, and signed out none is sent (public tiles keep showing).
const SCHEME = "canopy://";
export const tileURL = (url) => url.replace(/^https?:\/\/[^/]+\//, SCHEME).replace(/^\//, SCHEME);

maplibregl.addProtocol("canopy", async (params, abort) => {
  const url = `${origin}/${params.url.slice(SCHEME.length)}`;
  const send = async () => {
    const token = await freshToken(0.4);
    return fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {}, signal: abort.signal });
  };
  let response = await send();
  if (response.status === 401 && currentUser()) {
    try {
      await refresh();
    } catch (err) { /* signed out now: ask again without a token */ }
    response = await send();
  }
  if (response.status === 204 && params.type !== "image") return { data: new ArrayBuffer(0) };   // an empty MVT
  if (!response.ok || response.status === 204) {
    const error = new Error(`${url}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return { data: await response.arrayBuffer(), cacheControl: response.headers.get("Cache-Control"),
           expires: response.headers.get("Expires") };
});

export const map = new maplibregl.Map({
  container: "map",
  style: { version: 8, sources: {},
           layers: [{ id: "background", type: "background", paint: { "background-color": "#f2efe9" } }] },
  center: [-122.573, 49.2825],
  zoom: 14,
});
map.addControl(new maplibregl.NavigationControl(), "top-left");
map.addControl(new maplibregl.ScaleControl(), "bottom-left");

const groups = new Map();   // switcher entry -> MapLibre layer ids
export const rasters = new Map();   // raster id -> {id, kind, layer, bands, units, bidx, scan}

function addSwitch(key, title, layerIds, visible = true, legend = null) {
  groups.set(key, layerIds);
  const item = document.createElement("li");
  item.dataset.layer = key;
  const label = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = visible;
  box.dataset.group = key;
  box.addEventListener("change", () => {
    for (const id of layerIds) map.setLayoutProperty(id, "visibility", box.checked ? "visible" : "none");
    if (legend) legend.hidden = !box.checked;      // the legend of what is drawn only
  });
  const text = document.createElement("span");
  text.className = "layer-title";
  text.textContent = title;
  label.append(box, " ", text);
  item.append(label);
  document.getElementById("layers").append(item);
  return item;
}

/** Pixels per metre at zoom `z` and latitude `lat` (Web Mercator). */
function pxPerMetre(z, lat) {
  return (256 * 2 ** z) / (40075016.686 * Math.cos((lat * Math.PI) / 180));
}

function crownRadius(lat) {
  const crown = ["coalesce", ["get", "crown_diameter_m"], 3];
  const radius = (z) => ["max", 2, ["*", crown, pxPerMetre(z, lat) / 2]];
  return ["interpolate", ["exponential", 2], ["zoom"], 16, radius(16), 24, radius(24)];
}

let sizedFor = null;
/** Near trees are circles of their crown's diameter: pixels per metre depend on the latitude. */
export function sizeTrees(lat) {
  if (sizedFor !== null && Math.abs(sizedFor - lat) < 0.2) return;
  sizedFor = lat;
  if (map.getLayer("trees-1")) map.setPaintProperty("trees-1", "circle-radius", crownRadius(lat));
}

function treeLayers(lat) {
  // far out (z13-16) the server sends the tallest tree of each ~4 px cell (server/tiles/mvt.py):
  // small dots, larger for taller trees, the tallest drawn on top; from z16 every tree, a circle of its crown
  return [
    { type: "circle", minzoom: 13, maxzoom: 16,
      layout: { "circle-sort-key": ["coalesce", ["get", "height_m"], 0] },
      paint: { "circle-radius": ["interpolate", ["linear"], ["coalesce", ["get", "height_m"], 0], 5, 1.2, 40, 2.6],
               "circle-color": "#ffffff", "circle-opacity": 0.9, "circle-stroke-color": "#1b4332",
               "circle-stroke-width": 0.5 } },
    { type: "circle", minzoom: 16,
      paint: { "circle-radius": crownRadius(lat),
               "circle-color": "#ffffff", "circle-opacity": 0.25,
               "circle-stroke-color": "#ffffff", "circle-stroke-width": 1.5 } },
  ];
}

const VECTORS = (lat) => [
  { id: "scans", title: "Scan footprints", minzoom: 0,
    layers: [{ type: "line", paint: { "line-color": "#7b2cbf", "line-width": 2, "line-dasharray": [2, 1] } }] },
  { id: "plots", title: "Plots", minzoom: 0,
    layers: [{ type: "fill", paint: { "fill-color": "#ffb703", "fill-opacity": 0.15 } },
             { type: "line", paint: { "line-color": "#d00000", "line-width": 3 } }] },
  { id: "crowns", title: "Crowns", minzoom: 15,
    layers: [{ type: "line", paint: { "line-color": "#1b4332", "line-width": 1 } }] },
  { id: "trees", title: "Trees", minzoom: 13, layers: treeLayers(lat) },
];

export function addVectors(lat) {
  for (const v of VECTORS(lat)) {
    map.addSource(v.id, {
      type: "vector",
      tiles: [`${SCHEME}collections/${v.id}/tiles/WebMercatorQuad/{z}/{y}/{x}`],
      minzoom: v.minzoom, maxzoom: 20,
    });
    const ids = v.layers.map((spec, i) => {
      const id = `${v.id}-${i}`;
      map.addLayer({ id, source: v.id, "source-layer": v.id, minzoom: v.minzoom, ...spec });
      return id;
    });
    addSwitch(v.id, v.title, ids);
  }
}

/** Fetch the tiles of source `id` again (after a refused tile and a renewed token). */
export function reloadSource(id) {
  const source = map.getSource(id);
  if (source && source.setTiles && source.tiles) source.setTiles(source.tiles);
}

/** After sign-in, sign-out or a job: every tile again, with what this visitor may now see. */
export function reloadVectors() {
  for (const id of ["scans", "plots", "crowns", "trees"]) {
    const source = map.getSource(id);
    if (source && source.setTiles) source.setTiles([`${SCHEME}collections/${id}/tiles/WebMercatorQuad/{z}/{y}/{x}`]);
  }
}

const className = (name) => name.replace(/_/g, " ");

function classesHTML(r, style) {
  return `<div class="legend-title">${esc(r.title)}</div><ul class="legend-classes">` + style.classes.map((c) =>
    `<li data-class="${esc(c.name)}"><span class="class-swatch" style="background: rgba(${c.color.slice(0, 3).join(",")},` +
    `${c.color[3] / 255})"></span>${esc(className(c.name))}</li>`).join("") + "</ul>";
}

function legendHTML(r, style) {
  if (style.classes) return classesHTML(r, style);
  const stops = style.legend.map(([i, red, g, b, a]) => `rgba(${red},${g},${b},${a / 255}) ${((i - 1) / 254) * 100}%`);
  const unit = unitSymbol(r.units[r.bidx - 1] ?? (r.kind === "density" ? "pts/m²" : "metre"));
  const u = unit ? (unit === "%" ? " %" : ` ${unit}`) : "";
  const [lo, hi] = style.rescale;
  const mid = (lo + hi) / 2;
  const band = r.bands.length > 1 ? ` — ${esc(r.bands[r.bidx - 1] || `band ${r.bidx}`)}` : "";
  const s = r.bandStats || {};
  const range = Number.isFinite(s.min) && Number.isFinite(s.max)
    ? `<div class="muted">values ${num(s.min, 1)} to ${num(s.max, 1)}${u}${Number.isFinite(s.mean) ? `, mean ${num(s.mean, 1)}${u}` : ""}</div>` : "";
  return `<div class="legend-title">${esc(r.title)}${band}${PALETTE_NOTE[r.kind] ? ` <span class="muted">(${PALETTE_NOTE[r.kind]})</span>` : ""}</div>` +
    `<div class="legend-bar" style="background: linear-gradient(to right, ${stops.join(", ")})"></div>` +
    `<div class="legend-scale"><span>${lo.toFixed(1)}${u}</span><span>${mid.toFixed(1)}${u}</span><span>${hi.toFixed(1)}${u}</span></div>` + range;
}

/** The value range shown for a band: a CHM from 0 to its real maximum, others from their statistics. */
function rescaleFor(r) {
  const s = r.bandStats || {};
  if (r.kind === "chm" && Number.isFinite(s.max) && s.max > 0) return [0, Math.ceil(s.max)];
  if (r.kind === "metrics") {
    const lo = s.percentile_2 ?? s.min, hi = s.percentile_98 ?? s.max;
    if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) return [lo, hi];
  }
  return null;   // the server's default for the kind
}

async function styleRaster(r) {
  const q = new URLSearchParams({ bidx: String(r.bidx) });
  const rescale = rescaleFor(r);
  if (rescale) q.set("rescale", rescale.map((v) => +v.toFixed(4)).join(","));
  const tj = await apiJSON(`/rasters/${r.id}/tilejson.json?${q}`);
  r.style = tj["canopy:style"];
  r.legend.innerHTML = legendHTML(r, r.style);
  r.classes = r.style.classes || null;
  return tj;
}

async function bandStats(r) {
  if (r.kind !== "metrics" && r.featureStats && Number.isFinite(r.featureStats.max)) return r.featureStats;
  try {
    const doc = await apiJSON(`/rasters/${r.id}/statistics?bidx=${r.bidx}&bins=10`);
    return Object.values(doc.bands)[0];
  } catch (err) {
    return r.featureStats || {};
  }
}

function bandPicker(r) {
  const select = document.createElement("select");
  select.className = "band-picker";
  select.setAttribute("aria-label", `band of ${r.title}`);
  select.dataset.raster = r.id;
  r.bands.forEach((name, i) => {
    const option = document.createElement("option");
    option.value = String(i + 1);
    const unit = unitSymbol(r.units[i]);
    option.textContent = `${name}${unit ? ` (${unit})` : ""}${metricTitle(name) !== name ? ` — ${metricTitle(name)}` : ""}`;
    select.append(option);
  });
  const preferred = r.bands.indexOf("zmean");
  select.value = String((preferred >= 0 ? preferred : 0) + 1);
  select.addEventListener("change", async () => {
    r.bidx = Number(select.value);
    r.bandStats = await bandStats(r);
    const tj = await styleRaster(r);
    map.getSource(r.layer).setTiles(tj.tiles.map(tileURL));
  });
  return select;
}

/** "CHM — scan #2 “Block 7” — run 3f2a1b9c": what the raster is, of which scan and run. */
export function rasterTitle(id, props) {
  const name = props.scan_id ? hooks.scanName(props.scan_id) : "";
  return [KIND_TITLE[props.kind] || props.kind,
          props.scan_id ? `scan #${props.scan_id}${name ? ` “${name}”` : ""}` : `raster #${id}`,
          props.run_id ? `run ${String(props.run_id).slice(0, 8)}` : ""].filter(Boolean).join(" — ");
}

/** Add raster `feature` (an item of the rasters collection) as a layer; returns its bounds. */
export async function addRaster(feature) {
  const id = String(feature.id);
  if (rasters.has(id)) return rasters.get(id).bounds;
  const props = feature.properties || {};
  const info = await apiJSON(`/rasters/${id}`);
  const bands = (info.band_descriptions || []).map((d, i) => d || (props.bands || [])[i] || `band ${i + 1}`);
  const r = { id, kind: props.kind, scan: props.scan_id, run: props.run_id, layer: `raster-${id}`, bands,
              units: info.band_units || [], bidx: 1, featureStats: props.stats || {}, bounds: info.bbox,
              title: rasterTitle(id, props) };
  const box = document.createElement("div");
  box.className = "legend-block";
  box.dataset.raster = id;
  r.legend = document.createElement("div");
  box.append(r.legend);
  if ((r.kind === "metrics" || r.kind === "aba") && bands.length > 1) {   // aba: attributes, then their flags
    const picker = bandPicker(r);
    r.bidx = Number(picker.value);
    box.prepend(picker);
  }
  r.bandStats = await bandStats(r);
  const tj = await styleRaster(r);
  rasters.set(id, r);
  document.getElementById("legend").append(box);
  const before = map.getLayer("scans-0") ? "scans-0" : undefined;
  map.addSource(r.layer, { type: "raster", tiles: tj.tiles.map(tileURL), tileSize: 256, bounds: tj.bounds,
                           minzoom: tj.minzoom, maxzoom: tj.maxzoom });
  const visible = !HIDDEN.includes(r.kind);
  box.hidden = !visible;
  map.addLayer({ id: r.layer, type: "raster", source: r.layer,
                 layout: { visibility: visible ? "visible" : "none" },
                 paint: { "raster-resampling": "nearest" } }, before);
  addSwitch(r.layer, r.title, [r.layer], visible, box);
  return tj.bounds;
}

/** The scans' names are known (or changed): the rasters' titles again. */
export function retitleRasters() {
  for (const r of rasters.values()) {
    r.title = rasterTitle(r.id, { kind: r.kind, scan_id: r.scan, run_id: r.run });
    const text = document.querySelector(`#layers li[data-layer="${r.layer}"] .layer-title`);
    if (text) text.textContent = r.title;
    if (r.style) r.legend.innerHTML = legendHTML(r, r.style);
  }
}

export function removeRastersNotIn(ids) {
  for (const [id, r] of [...rasters]) {
    if (ids.has(id)) continue;
    if (map.getLayer(r.layer)) map.removeLayer(r.layer);
    if (map.getSource(r.layer)) map.removeSource(r.layer);
    document.querySelector(`#layers li[data-layer="${r.layer}"]`)?.remove();
    document.querySelector(`#legend .legend-block[data-raster="${id}"]`)?.remove();
    groups.delete(r.layer);
    rasters.delete(id);
  }
}

/** Every raster the visitor may see (CHM and DTM shown, grid metrics listed); fits the map. */
export async function loadRasters(wanted = null) {
  const page = await apiJSON("/collections/rasters/items?limit=200&f=json");
  const features = page.features || [];
  removeRastersNotIn(new Set(features.map((f) => String(f.id))));
  let focus = null;
  // DTM first so that the CHM is drawn over it
  const order = { dtm: 0, dsm: 1, density: 2, metrics: 3, chm: 4, chm_diff: 5, change: 6 };
  features.sort((a, b) => (order[a.properties.kind] ?? 9) - (order[b.properties.kind] ?? 9));
  for (const feature of features) {
    try {
      const bounds = await addRaster(feature);
      if (String(feature.id) === wanted || (!wanted && !focus)) focus = bounds;
    } catch (err) {
      console.warn(`raster ${feature.id}:`, err.message);   // its file is missing: skip it, keep the map
    }
  }
  return focus;
}

export function fit(bounds) {
  if (bounds) map.fitBounds([[bounds[0], bounds[1]], [bounds[2], bounds[3]]], { padding: 20, animate: false });
}

// -- pop-ups ---------------------------------------------------------------------------------

const TREE_FIELDS = [["height_m", "Height", "m", 1], ["apex_height_m", "Apex height", "m", 1],
                     ["crown_diameter_m", "Crown diameter", "m", 1], ["crown_area_m2", "Crown area", "m²", 1]];
const PLOT_MAIN = ["zmax", "zmean", "zsd", "zq95", "cover", "gap", "lai", "rumple", "pground", "n", "area_m2"];

function row(label, value, unit = "", decimals = null, title = "") {
  if (value === null || value === undefined || typeof value === "object") return "";
  const shown = typeof value === "number" ? num(value, decimals) : esc(value);
  return `<tr><td${title ? ` title="${esc(title)}"` : ""}>${esc(label)}</td><td><b>${shown}</b>${unit ? ` ${esc(unit)}` : ""}</td></tr>`;
}

async function plotHTML(f) {
  let props = f.properties;
  try {
    props = (await apiJSON(`/collections/plots/items/${f.id}?f=json`)).properties;
  } catch (err) { /* the tile's copy will do */ }
  const metrics = typeof props.metrics === "object" && props.metrics ? props.metrics
    : Object.fromEntries(Object.entries(f.properties).filter(([k]) => !["name", "project_id"].includes(k)));
  const keys = Object.keys(metrics).filter((k) => typeof metrics[k] !== "object" || metrics[k] === null);
  const main = keys.filter((k) => PLOT_MAIN.includes(k) || keys.length <= 12);
  const rest = keys.filter((k) => !main.includes(k));
  const rows = (list) => list.map((k) => row(k, metrics[k], metricUnit(k), null, metricTitle(k))).join("");
  let lad = metrics.lad;
  if (typeof lad === "string") {
    try { lad = JSON.parse(lad); } catch (err) { lad = null; }
  }
  return `<div class="popup-block"><b>Plot ${esc(props.name ?? "")}</b> #${esc(f.id ?? "")}` +
    (keys.length ? `<table class="popup-table">${rows(main)}</table>` : '<div class="muted">no metrics yet: run plot-metrics or forest-inventory</div>') +
    (rest.length ? `<details><summary>all ${keys.length} metrics</summary><table class="popup-table">${rows(rest)}</table></details>` : "") +
    (lad && lad.z ? `<div>Leaf area density profile</div>${ladChart(lad)}` : "") + "</div>";
}

function treeHTML(f) {
  const p = f.properties;
  return `<div class="popup-block"><b>Tree</b> #${esc(f.id ?? "")}<table class="popup-table">` +
    TREE_FIELDS.map(([k, label, unit, d]) => row(label, p[k], unit, d)).join("") + "</table></div>";
}

function scanHTML(f) {
  const p = f.properties;
  return `<div class="popup-block"><b>Scan ${esc(p.name ?? "")}</b> #${esc(f.id ?? "")}<table class="popup-table">` +
    row("Status", p.status) + row("Points", p.point_count) + row("Density", p.density_pts_m2, "pts/m²", 1) +
    "</table></div>";
}

function crownHTML(f) {
  return `<div class="popup-block"><b>Crown</b> of tree #${esc(f.properties.tree_id ?? "")}<table class="popup-table">` +
    row("Area", f.properties.area_m2, "m²", 1) + "</table></div>";
}

const popups = [];
/** Close the pop-ups (on sign-out they may show what the visitor can no longer see). */
export function closePopups() {
  while (popups.length) popups.pop().remove();
}

export async function showPopup(lngLat, point) {
  const layerIds = [...groups.values()].flat().filter((id) => map.getLayer(id) && !id.startsWith("raster-"));
  const box = [[point.x - 4, point.y - 4], [point.x + 4, point.y + 4]];
  const features = map.queryRenderedFeatures(box, { layers: layerIds });
  const seen = new Set();
  let html = "";
  for (const f of features) {
    const key = `${f.sourceLayer}:${f.id}`;
    if (seen.has(key) || seen.size >= 5) continue;
    seen.add(key);
    if (f.sourceLayer === "plots") html += await plotHTML(f);
    else if (f.sourceLayer === "trees") html += treeHTML(f);
    else if (f.sourceLayer === "crowns") html += crownHTML(f);
    else if (f.sourceLayer === "scans") html += scanHTML(f);
  }
  for (const r of rasters.values()) {
    if (map.getLayoutProperty(r.layer, "visibility") === "none") continue;
    try {
      const p = await apiJSON(`/rasters/${r.id}/point?lon=${lngLat.lng}&lat=${lngLat.lat}`);
      const i = r.bidx - 1;
      const v = p.values[i];
      const cls = r.classes && r.classes.find((c) => c.value === v);
      if (cls) {
        html += `<div>${esc(r.title)}: <b>${esc(className(cls.name))}</b></div>`;
        continue;
      }
      const band = r.bands.length > 1 ? ` ${esc(p.band_names[i] || r.bands[i])}` : "";
      const unit = unitSymbol(r.units[i] ?? (["chm", "dtm", "dsm", "chm_diff"].includes(r.kind) ? "metre" : ""));
      html += `<div>${esc(r.title)}${band}: <b>${v === null ? "no data" : num(v)}</b>${v === null || !unit ? "" : ` ${esc(unit)}`}</div>`;
    } catch (err) { /* outside this raster */ }
  }
  closePopups();
  if (html) popups.push(new maplibregl.Popup({ maxWidth: "320px" }).setLngLat(lngLat).setHTML(html).addTo(map));
  return html;
}

export { withUnit };
