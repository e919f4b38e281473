// Canopy's web app: the map (plots, scan footprints, trees, crowns, rasters with legends),
// sign-in with silent token renewal, projects and scans, tus uploads, process forms generated
// from the OGC process descriptions, live jobs and downloads. Everything comes from this
// server: MapLibre GL and tus-js-client are bundled in by web/build.mjs (no CDN).
import maplibregl from "maplibre-gl";
import { apiJSON, currentUser, onSessionChange, refresh, reloadMe, signIn, signOut, stats } from "./api.js";
import { initDownloads, openReport, renderDownloads, reportLink } from "./downloads.js";
import { esc, num } from "./format.js";
import { initJobs, loadJobs, relabelJobs, resetJobs, track } from "./jobs.js";
import { addVectors, closePopups, fit, initLayers, loadRasters, map, rasters, reloadSource, reloadVectors, retitleRasters,
         showPopup, sizeTrees } from "./layers.js";
import { initProcesses, listProcesses, refreshRuns, refreshScanChoices, selectScan } from "./processes.js";
import { initProjects, manages, reopenMembers } from "./projects.js";
import { initAreaModels, refreshAreaModels } from "./aba.js";
import { initFieldPlots } from "./fieldplots.js";
import { initUploads } from "./upload.js";

const params = new URLSearchParams(window.location.search);
let scans = [];
let projects = [];

// -- account ----------------------------------------------------------------------------------

function showUser() {
  const user = currentUser();
  const form = document.getElementById("signin");
  const who = document.getElementById("whoami");
  const out = document.getElementById("signedout");
  form.hidden = Boolean(user);
  who.hidden = !user;
  if (user) who.querySelector("span").textContent = `signed in as ${user.username || user.name}` +
    (user.role ? ` (${user.role})` : "");
  out.hidden = Boolean(user);
  out.textContent = stats.endedReason ? `Signed out: ${stats.endedReason}. Public layers stay on the map.`
    : "Signed out: you see public projects only.";
  out.classList.toggle("warning", Boolean(stats.endedReason));
  for (const el of document.querySelectorAll(".needs-user")) el.classList.toggle("disabled", !user);
}

document.getElementById("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = Object.fromEntries(new FormData(event.target));
  const note = document.getElementById("signin-error");
  note.textContent = "";
  try {
    await signIn(data.username, data.password);
    event.target.reset();
  } catch (err) {
    note.textContent = err.message;
  }
});
document.getElementById("signout").addEventListener("click", () => signOut());

let lastUser = currentUser() ? currentUser().id ?? currentUser().name : null;
onSessionChange(() => {
  const user = currentUser();
  const id = user ? user.id ?? user.name : null;
  showUser();
  if (id === lastUser) return;        // a renewed token: nothing else changes
  lastUser = id;
  closePopups();
  resetJobs();
  document.getElementById("up-list").innerHTML = "";
  if (!user) document.getElementById("panel").scrollTop = 0;   // the "signed out" note in view
  reloadVectors();
  refreshAll();
});

// -- projects and scans ---------------------------------------------------------------------------

function writable(projectId) {
  const user = currentUser();
  if (!user) return false;
  if (user.role === "admin") return true;
  return (user.projects || []).some((p) => p.id === projectId && ["owner", "editor"].includes(p.role));
}

async function loadProjects() {
  try {
    projects = (await apiJSON("/projects")).projects || [];
  } catch (err) {
    projects = [];
  }
  const list = document.getElementById("projects");
  const role = (id) => (currentUser()?.projects || []).find((p) => p.id === id)?.role;
  list.innerHTML = projects.length ? projects.map((p) => `<li data-project="${p.id}"><b>${esc(p.name)}</b> ` +
    `<span class="muted">#${p.id} · ${esc(p.visibility)}${role(p.id) ? ` · ${esc(role(p.id))}` : ""}` +
    `${writable(p.id) ? " · you may upload" : ""}</span>` + (currentUser()
      ? ` <button type="button" data-members="${p.id}" aria-expanded="false">${manages(p.id) ? "members…" : "members"}</button>` : "") +
    "</li>").join("") : '<li class="muted">no project visible</li>';
  reopenMembers();
  for (const id of ["up-project", "fp-project"]) {     // the projects this user may write to
    const select = document.getElementById(id);
    const keep = select.value;
    select.innerHTML = projects.filter((p) => writable(p.id))
      .map((p) => `<option value="${p.id}">${esc(p.name)} (#${p.id})</option>`).join("");
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
}

function scanLine(s) {
  const p = s.properties;
  const crsUnknown = !p.crs_epsg && ["ready", "uploaded", "ingesting"].includes(p.status);
  const warn = crsUnknown && p.status === "ready"
    ? '<div class="warning">⚠ CRS unknown: re-upload with a CRS (e.g. EPSG:2992) to place it on the map</div>' : "";
  return `<li data-scan="${s.id}" data-status="${esc(p.status)}"${crsUnknown ? ' data-crs-unknown="1"' : ""}>` +
    `<b>${esc(p.name)}</b> <span class="muted">#${s.id}</span> <span class="badge badge-${esc(p.status)}">${esc(p.status)}</span>` +
    `<div class="muted">${p.point_count ? `${num(p.point_count)} points` : ""}` +
    `${p.density_pts_m2 ? ` · ${num(p.density_pts_m2, 1)} pts/m²` : ""}${p.crs_epsg ? ` · EPSG:${p.crs_epsg}` : ""}` +
    `${p.error ? ` · <span class="error-text">${esc(p.error)}</span>` : ""}</div>${warn}` +
    (p.warnings || []).map((w) => `<div class="warning scan-warning">⚠ ${esc(w)}</div>`).join("") +
    `<div><button type="button" class="scan-run" data-scan="${s.id}" aria-label="Run a process on scan #${s.id}">Run…</button> ` +
    reportLink(s.id, "report") +
    (s.geometry ? ` <button type="button" class="scan-zoom" data-scan="${s.id}">zoom</button>` : "") + "</div></li>";
}

async function loadScans() {
  try {
    scans = (await apiJSON("/collections/scans/items?limit=200&f=json&sortby=-created_at")).features || [];
  } catch (err) {
    scans = [];
  }
  const list = document.getElementById("scans");
  list.innerHTML = scans.length ? scans.map(scanLine).join("") : '<li class="muted">no scan yet</li>';
  const select = document.getElementById("up-scan");
  const keep = select.value;
  select.innerHTML = '<option value="">a new scan</option>' + scans.filter((s) => writable(s.properties.project_id))
    .map((s) => `<option value="${s.id}">add to #${s.id} ${esc(s.properties.name)}</option>`).join("");
  select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
  refreshScanChoices();
  refreshAreaModels();
  retitleRasters();
  relabelJobs();
  renderDownloads(scans, rasters);
}

const scanName = (id) => scans.find((s) => String(s.id) === String(id))?.properties.name || "";

document.getElementById("scans").addEventListener("click", (event) => {
  const report = event.target.closest("a[data-report]");
  if (report) {
    event.preventDefault();
    openReport(report.dataset.report);
  }
  const run = event.target.closest(".scan-run");
  if (run) {
    document.getElementById("sec-run").open = true;
    selectScan(run.dataset.scan);
    document.getElementById("sec-run").scrollIntoView();
  }
  const zoom = event.target.closest(".scan-zoom");
  if (zoom) {
    const s = scans.find((x) => String(x.id) === zoom.dataset.scan);
    const ring = s.geometry.coordinates[0];
    const xs = ring.map((c) => c[0]), ys = ring.map((c) => c[1]);
    fit([Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)]);
  }
});

// -- jobs and their results ------------------------------------------------------------------------

let scanTimer = null;
function scansSoon() {
  clearTimeout(scanTimer);
  scanTimer = setTimeout(loadScans, 300);
}

initJobs({
  scanName,
  // a job followed here ended (or one was dismissed): the layers follow the rasters the API lists
  // now (each scan's latest run), so the layers of runs it no longer lists go
  finished: async (job, results, { live } = {}) => {
    scansSoon();
    if (!live && job.status !== "dismissed") return;      // an old job of the history: its layers are listed already
    const before = new Set(rasters.keys());
    try {
      await loadRasters();
    } catch (err) {
      console.warn("rasters:", err.message);
    }
    const added = [...rasters.values()].filter((r) => !before.has(r.id));
    if (results && (results.trees || results.plots)) reloadVectors();
    if (live && added.length) fit(added[0].bounds);
    refreshRuns();
    renderDownloads(scans, rasters);
    document.body.dataset.layersFor = `${document.body.dataset.layersFor || ""} ${job.jobID}`.trim();
  },
});
initLayers({ scanName });
initProjects({
  changed: async (project) => {
    await reloadMe();              // the new project's role
    await loadProjects();
    if (project) for (const id of ["up-project", "fp-project"]) document.getElementById(id).value = String(project.id);
  },
});

// -- the panel: hidden and shown again by a button over the map (on a phone the map then fills the screen)

const toggle = document.getElementById("panel-toggle");
toggle.addEventListener("click", () => {
  const hidden = document.body.classList.toggle("panel-hidden");
  toggle.setAttribute("aria-expanded", String(!hidden));
  toggle.textContent = hidden ? "Show panel" : "Hide panel";
  map.resize();
});

initUploads({ jobStarted: (id) => track(id), scanChanged: scansSoon });
initFieldPlots({ imported: () => { reloadSource("plots"); refreshAreaModels(); } });
initAreaModels({ scans: () => scans.filter((s) => writable(s.properties.project_id)) });
initDownloads();

async function refreshAll() {
  await loadProjects();
  await loadScans();
  try {
    await loadRasters();
  } catch (err) {
    console.error(err);
  }
  renderDownloads(scans, rasters);
  loadJobs();
  listProcesses();
}

// -- the map ---------------------------------------------------------------------------------------

map.on("click", (event) => showPopup(event.lngLat, event.point));
map.on("moveend", () => sizeTrees(map.getCenter().lat));

map.on("load", async () => {
  showUser();
  addVectors(map.getCenter().lat);
  await loadProjects();
  await loadScans();
  try {
    const focus = await loadRasters(params.get("raster"));
    fit(focus);
  } catch (err) {
    console.error(err);
  }
  // the first moment everything in view is drawn (tiles of the fitted view included)
  const idle = new Promise((resolve) => {
    let tries = 0;
    const check = () => (map.areTilesLoaded() || ++tries >= 3 ? resolve() : map.once("idle", check));
    map.once("idle", check);
  });
  map.triggerRepaint();
  renderDownloads(scans, rasters);
  await initProcesses({ scans: () => scans });
  loadJobs();
  idle.then(async () => {
    // `?popup=lon,lat` opens the pop-up there (a link to share a place; the browser test uses it)
    const at = (params.get("popup") || "").split(",").map(Number);
    if (at.length === 2 && at.every(Number.isFinite)) {
      const lngLat = new maplibregl.LngLat(at[0], at[1]);
      await showPopup(lngLat, map.project(lngLat));
    }
    document.body.dataset.ready = "1";
  });
});

// a tile refused with 401 (a token revoked before it expired): renew now, or end the session
const retried = new Map();
map.on("error", (event) => {
  if (!event.error || event.error.status !== 401 || !currentUser()) return;
  const id = event.sourceId;
  if (id && Date.now() - (retried.get(id) || 0) < 5000) return;
  retried.set(id, Date.now());
  refresh().then(() => id && reloadSource(id)).catch(() => {});
});

window.canopy = { map, rasters, track, showPopup, refreshAll };   // for the console (and the browser test)
