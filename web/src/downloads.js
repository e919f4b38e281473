// Downloads: the COG of each raster; trees, crowns and plots in the formats the collections
// serve (`f=`). Private data needs the token, so a click fetches the file with it and saves it.
import { api } from "./api.js";
import { bytes, esc } from "./format.js";

export const FORMATS = [["json", "GeoJSON", "geojson"], ["csv", "CSV", "csv"], ["gpkg", "GeoPackage", "gpkg"],
                        ["shp", "Shapefile", "zip"], ["fgb", "FlatGeobuf", "fgb"]];
const KIND_TITLE = { chm: "CHM", dtm: "DTM", dsm: "DSM", density: "Density", metrics: "Grid metrics" };

function link(href, text, filename) {
  return `<a href="${esc(href)}" data-download="${esc(filename)}">${esc(text)}</a>`;
}

function featureLinks(collection, filter, stem) {
  return FORMATS.map(([f, title, ext]) =>
    link(`/collections/${collection}/items?${filter}&limit=10000&f=${f}`, title, `${stem}.${ext}`)).join(" · ");
}

/** Fill the downloads list: per scan, its rasters and its trees and crowns; per project, its plots. */
export function renderDownloads(scans, rasters) {
  const box = document.getElementById("downloads");
  const byScan = new Map();
  for (const r of rasters.values()) {
    if (!byScan.has(String(r.scan))) byScan.set(String(r.scan), []);
    byScan.get(String(r.scan)).push(r);
  }
  let html = "";
  const projects = new Set();
  for (const s of scans) {
    const own = byScan.get(String(s.id)) || [];
    projects.add(s.properties.project_id);
    if (!own.length && s.properties.status !== "ready") continue;
    html += `<li class="dl-scan" data-scan="${s.id}"><b>${esc(s.properties.name)}</b> #${s.id}` +
      `<div>${own.map((r) => link(`/rasters/${r.id}/cog`, `${KIND_TITLE[r.kind] || r.kind} COG`,
                                  `${r.kind}-${r.id}.tif`)).join(" · ")}</div>` +
      `<div>Trees: ${featureLinks("trees", `scan_id=${s.id}`, `trees-scan${s.id}`)}</div>` +
      `<div>Crowns: ${featureLinks("crowns", `scan_id=${s.id}`, `crowns-scan${s.id}`)}</div>` +
      `<div><a href="/scans/${s.id}/report" target="_blank" rel="noopener">Report</a></div></li>`;
  }
  for (const p of projects) {
    html += `<li class="dl-plots">Plots of project ${esc(p)}: ${featureLinks("plots", `project_id=${p}`, `plots-project${p}`)}</li>`;
  }
  box.innerHTML = html || '<li class="muted">nothing to download yet</li>';
}

/** Clicks on download links: fetched with the token (when signed in), saved under the link's file name. */
export function initDownloads() {
  document.getElementById("downloads").addEventListener("click", async (event) => {
    const a = event.target.closest("a[data-download]");
    if (!a) return;
    event.preventDefault();
    const status = document.getElementById("download-status");
    const name = a.dataset.download;
    status.textContent = `downloading ${name}…`;
    const response = await api(a.getAttribute("href"), { headers: { Accept: "*/*" } });
    const blob = await response.blob();
    status.dataset.status = String(response.status);
    status.dataset.file = name;
    status.dataset.size = String(blob.size);
    if (!response.ok) {
      let detail = "";
      try {
        detail = JSON.parse(await blob.text()).detail || "";
      } catch (err) { /* not JSON */ }
      status.innerHTML = `<span class="error-text">${esc(name)}: HTTP ${response.status} ${esc(detail)}</span>`;
      return;
    }
    const url = URL.createObjectURL(blob);
    const save = document.createElement("a");
    save.href = url;
    save.download = name;
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    status.textContent = `${name}: HTTP ${response.status}, ${bytes(blob.size)}`;
  });
}
