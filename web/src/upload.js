// Uploads from the browser over tus (tus-js-client against /uploads): drag and drop, several
// files as one scan (the first file makes the scan, the server names it in `Canopy-Scan`, the
// others are sent with `scan: <id>`), progress, pause/resume, the server's reason when it
// refuses a file (422), and an optional CRS for files without one.
import * as tus from "tus-js-client";
import { freshToken } from "./api.js";
import { bytes, esc } from "./format.js";

const params = new URLSearchParams(window.location.search);
const CHUNK = Math.max(64 * 1024, Number(params.get("chunk")) || 8 * 1024 * 1024);
let pending = [];         // File objects chosen, not yet started
let hooks = { jobStarted: () => {}, scanChanged: () => {} };

export function initUploads(callbacks) {
  hooks = { ...hooks, ...callbacks };
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("up-files");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    choose([...e.dataTransfer.files]);
  });
  zone.addEventListener("click", (e) => {
    if (e.target === zone || e.target.classList.contains("dz-text")) input.click();
  });
  input.addEventListener("change", () => {
    choose([...input.files]);
    input.value = "";
  });
  document.getElementById("up-start").addEventListener("click", () => startAll());
}

function choose(files) {
  const accepted = files.filter((f) => f.size > 0);
  pending.push(...accepted);
  const name = document.getElementById("up-name");
  if (!name.value && accepted.length) name.value = accepted[0].name.replace(/\.(laz|las)$/i, "");
  renderPending();
}

function renderPending() {
  const box = document.getElementById("up-pending");
  box.textContent = pending.length
    ? `${pending.length} file(s) ready as one scan: ${pending.map((f) => `${f.name} (${bytes(f.size)})`).join(", ")}`
    : "";
  document.getElementById("up-start").disabled = !pending.length;
}

function row(file) {
  const item = document.createElement("li");
  item.className = "upload";
  item.dataset.file = file.name;
  item.dataset.state = "queued";
  item.innerHTML = `<div><b>${esc(file.name)}</b> <span class="muted">${bytes(file.size)}</span> ` +
    `<button type="button" class="up-toggle" disabled>Pause</button></div>` +
    `<div class="progress"><div style="width:0%"></div></div><div class="up-status muted">queued</div>`;
  document.getElementById("up-list").prepend(item);
  return item;
}

function problemOf(err) {
  const res = err && err.originalResponse;
  if (!res) return { status: 0, detail: err ? err.message : "network error" };
  let detail = res.getBody();
  try {
    const body = JSON.parse(detail);
    detail = body.detail || body.title || detail;
  } catch (e) { /* plain text */ }
  return { status: res.getStatus(), detail };
}

/** Upload one file; resolves with {scan, job} (ids) or rejects with {status, detail}. */
function send(file, metadata, item) {
  return new Promise((resolve, reject) => {
    const bar = item.querySelector(".progress > div");
    const status = item.querySelector(".up-status");
    const toggle = item.querySelector(".up-toggle");
    let found = {};
    const upload = new tus.Upload(file, {
      endpoint: `${window.location.origin}/uploads`,
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      metadata,
      storeFingerprintForResuming: false,
      // the token of the moment for every request: an upload outlives an access token
      onBeforeRequest: async (req) => {
        const token = await freshToken();
        if (token) req.setHeader("Authorization", `Bearer ${token}`);
      },
      onAfterResponse: (req, res) => {
        if (upload.url) item.dataset.url = upload.url;
        const scan = res.getHeader("Canopy-Scan");
        const job = res.getHeader("Canopy-Job");
        if (scan) found.scan = scan.split("/").pop();
        if (job) found.job = job.split("/").pop();
        if (res.getHeader("Canopy-Duplicate") === "true") found.duplicate = true;
      },
      onProgress: (sent, total) => {
        if (upload.url) item.dataset.url = upload.url;
        const pct = total ? (100 * sent) / total : 0;
        bar.style.width = `${pct}%`;
        item.dataset.progress = pct.toFixed(1);
        status.textContent = `${pct.toFixed(0)} % — ${bytes(sent)} of ${bytes(total)}`;
        if (sent === total) status.textContent = "checking the file…";
      },
      onError: (err) => {
        const problem = problemOf(err);
        item.dataset.state = "refused";
        item.classList.add("error");
        toggle.disabled = true;
        status.classList.remove("muted");
        status.innerHTML = `<span class="error-text">${problem.status === 422 ? "refused" : "failed"}: ${esc(problem.detail)}</span>`;
        reject(problem);
      },
      onSuccess: () => {
        item.dataset.state = "done";
        toggle.disabled = true;
        toggle.hidden = true;
        bar.style.width = "100%";
        status.textContent = found.duplicate ? `already uploaded: scan #${found.scan}`
          : `uploaded to scan #${found.scan}; ingestion queued`;
        item.dataset.scan = found.scan || "";
        resolve(found);
      },
    });
    toggle.disabled = false;
    toggle.addEventListener("click", async () => {
      if (item.dataset.state === "uploading") {
        item.dataset.state = "paused";
        toggle.textContent = "Resume";
        await upload.abort();       // keeps the upload: the server holds the bytes received
        if (upload.url) item.dataset.url = upload.url;
        status.textContent = `paused at ${item.dataset.progress || 0} %`;
      } else if (item.dataset.state === "paused") {
        item.dataset.state = "uploading";
        item.dataset.resumed = String(Number(item.dataset.resumed || 0) + 1);
        toggle.textContent = "Pause";
        upload.start();             // HEAD first: goes on from the offset the server reports
      }
    });
    item.dataset.state = "uploading";
    upload.start();
  });
}

async function startAll() {
  const files = pending;
  pending = [];
  renderPending();
  const project = document.getElementById("up-project").value;
  const existing = document.getElementById("up-scan").value;
  const name = document.getElementById("up-name").value.trim();
  const crs = document.getElementById("up-crs").value.trim();
  const note = document.getElementById("up-note");
  note.textContent = "";
  if (!(await freshToken())) {
    note.textContent = "sign in to upload";
    return;
  }
  if (!project && !existing) {
    note.textContent = "choose a project";
    return;
  }
  let scan = existing || null;
  const items = files.map((f) => [f, row(f)]);
  for (const [file, item] of items) {
    const metadata = { filename: file.name };
    if (scan) metadata.scan = String(scan);
    else {
      metadata.project = String(project);
      metadata.name = name || file.name;
    }
    if (crs) metadata.crs = crs;
    try {
      const found = await send(file, metadata, item);
      scan = scan || found.scan;
      if (found.job) hooks.jobStarted(found.job);
      hooks.scanChanged();
    } catch (problem) {
      hooks.scanChanged();
    }
  }
}
