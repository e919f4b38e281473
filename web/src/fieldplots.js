// Field plots from a file (POST /projects/{id}/plots): a GeoPackage, a zipped Shapefile or a
// CSV of plot centres; the server reads it (GDAL) and answers how many plots it made or why
// it refused the file, which is shown as it said it.
import { apiJSON } from "./api.js";
import { esc } from "./format.js";

const MEDIA = { gpkg: "application/geopackage+sqlite3", zip: "application/zip", csv: "text/csv" };
let hooks = { imported: () => {} };

export function initFieldPlots(callbacks) {
  hooks = { ...hooks, ...callbacks };
  document.getElementById("fp-start").addEventListener("click", () => importFile());
}

async function importFile() {
  const file = document.getElementById("fp-file").files[0];
  const status = document.getElementById("fp-status");
  const project = document.getElementById("fp-project").value;
  const media = file && MEDIA[(file.name.split(".").pop() || "").toLowerCase()];
  status.dataset.state = "error";
  if (!project) {
    status.textContent = "choose a project you may edit";
    return;
  }
  if (!media) {
    status.textContent = "choose a .gpkg, a zipped Shapefile (.zip) or a .csv of plot centres";
    return;
  }
  const query = new URLSearchParams();
  for (const [name, id] of [["radius", "fp-radius"], ["crs", "fp-crs"], ["name", "fp-name"]]) {
    const value = document.getElementById(id).value.trim();
    if (value) query.set(name, value);
  }
  status.dataset.state = "sending";
  status.textContent = `importing ${file.name}…`;
  try {
    const body = await apiJSON(`/projects/${project}/plots?${query}`,
      { method: "POST", body: file, headers: { "Content-Type": media } });
    status.dataset.state = "done";
    status.dataset.imported = String(body.imported);
    status.innerHTML = `${esc(String(body.imported))} plot(s) imported from ${esc(file.name)}`;
    hooks.imported(body);
  } catch (err) {
    status.dataset.state = "refused";
    status.textContent = `refused: ${(err.body && err.body.detail) || err.message}`;
  }
}
