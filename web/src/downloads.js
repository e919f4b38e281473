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
      `<div>${reportLink(s.id, "Report")}</div></li>`;
  }
  for (const p of projects) {
    html += `<li class="dl-plots">Plots of project ${esc(p)}: ${featureLinks("plots", `project_id=${p}`, `plots-project${p}`)}</li>`;
  }
  box.innerHTML = html || '<li class="muted">nothing to download yet</li>';
}

/** A link to scan `id`'s report: a click opens it with the user's token (`openReport`). */
export function reportLink(id, text) {
  return `<a href="/scans/${id}/report" class="report-link" data-report="${esc(String(id))}">${esc(text)}</a>`;
}

async function fetchBlob(path) {
  const response = await api(path, { headers: { Accept: "*/*" } });
  const blob = await response.blob();
  if (!response.ok) {
    let detail = "";
    try {
      detail = JSON.parse(await blob.text()).detail || "";
    } catch (err) { /* not JSON */ }
    throw new Error(`HTTP ${response.status} ${detail}`.trim());
  }
  return blob;
}

/** Open scan `id`'s report in a new tab. A private scan's report (and its quicklook images) is
 * only served with the user's token, which a plain link does not send: the page fetches the
 * report and its images with the token and opens them as a document of this origin (blob URLs,
 * kept while the page is open so the tab can be reloaded and printed). */
export async function openReport(id) {
  const tab = window.open("", "_blank");        // opened within the click, so no pop-up blocker stops it
  const notice = document.getElementById("notice");
  notice.textContent = `opening the report of scan #${id}…`;
  document.body.dataset.report = "";
  try {
    const html = await (await fetchBlob(`/scans/${id}/report`)).text();
    const doc = new DOMParser().parseFromString(html, "text/html");
    for (const img of doc.querySelectorAll("img[src]")) {
      const src = new URL(img.getAttribute("src"), window.location.href);
      if (!/^\/scans\/\d+\/report\//.test(src.pathname)) continue;    // its quicklooks, from this server
      try {
        img.src = URL.createObjectURL(await fetchBlob(src.pathname + src.search));
      } catch (err) {
        img.alt = `${img.alt} (${err.message})`;
      }
    }
    const url = URL.createObjectURL(new Blob([`<!doctype html>\n${doc.documentElement.outerHTML}`],
                                             { type: "text/html" }));
    document.body.dataset.report = url;
    if (tab) tab.location.href = url;
    notice.innerHTML = tab ? "" : `the report is ready: <a href="${url}" target="_blank">open it</a>`;
  } catch (err) {
    tab?.close();
    document.body.dataset.report = `error: ${err.message}`;
    notice.innerHTML = `<span class="error-text">report of scan #${esc(String(id))}: ${esc(err.message)}</span>`;
  }
}

/** Clicks on download links: fetched with the token (when signed in), saved under the link's file name. */
export function initDownloads() {
  document.getElementById("downloads").addEventListener("click", async (event) => {
    const report = event.target.closest("a[data-report]");
    if (report) {
      event.preventDefault();
      openReport(report.dataset.report);
      return;
    }
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
