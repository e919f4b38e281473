// Canopy's web map: plots, scan footprints, trees and crowns as vector tiles, CHM/DTM rasters
// as raster tiles with a legend, a layer switcher, pop-ups, sign-in and running jobs' progress.
// Everything comes from this server (MapLibre GL is bundled in by web/build.mjs).
import maplibregl from "maplibre-gl";

const origin = window.location.origin;
const params = new URLSearchParams(window.location.search);
const TOKEN_KEY = "canopy.token";
let token = sessionStorage.getItem(TOKEN_KEY);

const VECTORS = [
  { id: "scans", title: "Scan footprints", minzoom: 0,
    layers: [{ type: "line", paint: { "line-color": "#7b2cbf", "line-width": 2, "line-dasharray": [2, 1] } }] },
  { id: "plots", title: "Plots", minzoom: 0,
    layers: [{ type: "fill", paint: { "fill-color": "#ffb703", "fill-opacity": 0.15 } },
             { type: "line", paint: { "line-color": "#d00000", "line-width": 3 } }] },
  { id: "crowns", title: "Crowns", minzoom: 14,
    layers: [{ type: "line", paint: { "line-color": "#1b4332", "line-width": 1 } }] },
  { id: "trees", title: "Trees", minzoom: 13,
    layers: [{ type: "circle", paint: { "circle-radius": 3, "circle-color": "#081c15",
                                         "circle-stroke-color": "#ffffff", "circle-stroke-width": 1 } }] },
];
const RASTER_KINDS = ["chm", "dtm"];

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json", ...headers() } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

const map = new maplibregl.Map({
  container: "map",
  style: { version: 8, sources: {},
           layers: [{ id: "background", type: "background", paint: { "background-color": "#f2efe9" } }] },
  center: [-122.573, 49.2825],
  zoom: 14,
  // tiles of private projects need the token; send it to this server only
  transformRequest: (url) => (token && url.startsWith(origin) ? { url, headers: headers() } : { url }),
});
map.addControl(new maplibregl.NavigationControl(), "top-left");
map.addControl(new maplibregl.ScaleControl(), "bottom-left");

const groups = new Map();   // switcher entry -> MapLibre layer ids

function addSwitch(key, title, layerIds, visible = true) {
  groups.set(key, layerIds);
  const item = document.createElement("li");
  const label = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = visible;
  box.dataset.group = key;
  box.addEventListener("change", () => {
    for (const id of layerIds) map.setLayoutProperty(id, "visibility", box.checked ? "visible" : "none");
  });
  label.append(box, ` ${title}`);
  item.append(label);
  document.getElementById("layers").append(item);
}

function addVectors() {
  for (const v of VECTORS) {
    map.addSource(v.id, {
      type: "vector",
      tiles: [`${origin}/collections/${v.id}/tiles/WebMercatorQuad/{z}/{y}/{x}`],
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

function legend(name, style) {
  const stops = style.legend.map(([i, r, g, b, a]) => `rgba(${r},${g},${b},${a / 255}) ${((i - 1) / 254) * 100}%`);
  const block = document.createElement("div");
  const unit = style.kind === "density" ? " pts/m²" : " m";
  block.innerHTML = `<div>${name}</div><div class="legend-bar" style="background: linear-gradient(to right, ${stops.join(", ")})"></div>` +
    `<div class="legend-scale"><span>${style.rescale[0].toFixed(1)}${unit}</span><span>${style.rescale[1].toFixed(1)}${unit}</span></div>`;
  document.getElementById("legend").append(block);
}

const rasters = [];   // {id, kind, layer}

async function addRasters() {
  const wanted = params.get("raster");
  const page = await getJSON("/collections/rasters/items?limit=100&f=json");
  const before = map.getLayer("scans-0") ? "scans-0" : undefined;
  let focus = null;
  for (const feature of page.features || []) {
    const id = String(feature.id);
    const kind = feature.properties.kind;
    if (!RASTER_KINDS.includes(kind) && id !== wanted) continue;
    let tj;
    try {
      tj = await getJSON(`/rasters/${id}/tilejson.json`);
    } catch (err) {
      continue;   // its file is missing: skip the layer, keep the map
    }
    const layer = `raster-${id}`;
    map.addSource(layer, { type: "raster", tiles: tj.tiles, tileSize: 256, bounds: tj.bounds,
                           minzoom: tj.minzoom, maxzoom: tj.maxzoom });
    map.addLayer({ id: layer, type: "raster", source: layer, paint: { "raster-resampling": "nearest" } }, before);
    const name = `${kind.toUpperCase()} #${id}`;
    addSwitch(layer, name, [layer], true);
    legend(name, tj["canopy:style"]);
    rasters.push({ id, kind, layer });
    if (id === wanted || (!wanted && !focus)) focus = tj.bounds;
  }
  if (focus) map.fitBounds([[focus[0], focus[1]], [focus[2], focus[3]]], { padding: 20, animate: false });
}

function row(key, value) {
  if (value === null || value === undefined || typeof value === "object") return "";
  const shown = typeof value === "number" ? (Number.isInteger(value) ? value : value.toFixed(2)) : value;
  return `<tr><td>${key}</td><td><b>${String(shown).replace(/</g, "&lt;")}</b></td></tr>`;
}

async function showPopup(lngLat, point) {
  const layerIds = [...groups.values()].flat().filter((id) => map.getLayer(id) && !id.startsWith("raster-"));
  const features = map.queryRenderedFeatures(point, { layers: layerIds });
  let html = "";
  for (const f of features.slice(0, 3)) {
    html += `<div><b>${f.sourceLayer}</b> #${f.id ?? ""}<table class="popup-table">` +
      Object.entries(f.properties).map(([k, v]) => row(k, v)).join("") + "</table></div>";
  }
  for (const r of rasters) {
    if (map.getLayoutProperty(r.layer, "visibility") === "none") continue;
    try {
      const p = await getJSON(`/rasters/${r.id}/point?lon=${lngLat.lng}&lat=${lngLat.lat}`);
      html += `<div>${r.kind.toUpperCase()} #${r.id}: <b>${p.values.map((v) => (v === null ? "no data" : v.toFixed(2))).join(", ")}</b></div>`;
    } catch (err) { /* outside this raster */ }
  }
  if (html) new maplibregl.Popup().setLngLat(lngLat).setHTML(html).addTo(map);
}

map.on("click", (event) => showPopup(event.lngLat, event.point));

// -- sign-in ------------------------------------------------------------------------------

function showUser() {
  const form = document.getElementById("signin");
  const who = document.getElementById("whoami");
  form.hidden = Boolean(token);
  who.hidden = !token;
  if (token) {
    try {
      who.querySelector("span").textContent = `signed in (user ${JSON.parse(atob(token.split(".")[1])).sub})`;
    } catch (err) {
      who.querySelector("span").textContent = "signed in";
    }
  }
}

document.getElementById("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = Object.fromEntries(new FormData(event.target));
  const response = await fetch("/auth/token", { method: "POST", headers: { "Content-Type": "application/json" },
                                                body: JSON.stringify(data) });
  if (!response.ok) {
    alert("Sign-in failed");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, (await response.json()).access_token);
  window.location.reload();        // every layer again, now with what this user may see
});
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  window.location.reload();
});

// -- running jobs: progress pushed as Server-Sent Events (read with fetch, so the token goes along)

async function followJob(job, item) {
  const bar = item.querySelector(".progress > div");
  try {
    const response = await fetch(`/jobs/${job.jobID}/events`, { headers: { Accept: "text/event-stream", ...headers() } });
    if (!response.ok || !response.body) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        if (!data) continue;
        const status = JSON.parse(data);
        bar.style.width = `${status.progress ?? 0}%`;
        item.querySelector(".status").textContent = `${status.status} ${status.progress ?? 0}%`;
      }
    }
  } catch (err) { /* the stream ended */ }
}

async function showJobs() {
  const list = document.getElementById("jobs");
  try {
    const jobs = (await getJSON("/jobs?f=json&limit=20")).jobs || [];
    const running = jobs.filter((j) => j.status === "running" || j.status === "accepted");
    if (!running.length) return;
    list.innerHTML = "";
    for (const job of running) {
      const item = document.createElement("li");
      item.innerHTML = `<div>${job.processID || job.process_id || "job"} <span class="status">${job.status} ${job.progress ?? 0}%</span></div>` +
        `<div class="progress"><div style="width:${job.progress ?? 0}%"></div></div>`;
      list.append(item);
      followJob(job, item);
    }
  } catch (err) { /* no jobs endpoint or not allowed */ }
}

map.on("load", async () => {
  showUser();
  addVectors();
  try {
    await addRasters();
  } catch (err) {
    console.error(err);
  }
  map.once("idle", async () => {
    // `?popup=lon,lat` opens the pop-up there (a link to share a place; the browser test uses it)
    const at = (params.get("popup") || "").split(",").map(Number);
    if (at.length === 2 && at.every(Number.isFinite)) {
      const lngLat = new maplibregl.LngLat(at[0], at[1]);
      await showPopup(lngLat, map.project(lngLat));
    }
    document.body.dataset.ready = "1";
  });
  showJobs();
});
