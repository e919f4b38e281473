// Jobs: history (/jobs), status, progress, messages and errors, live over Server-Sent Events
// (/jobs/{id}/events, read with fetch so the token goes along; a stream that ends before a
// final state is opened again with a fresh token), dismissal, and results when one succeeds.
import { api, apiJSON, freshToken } from "./api.js";
import { esc, num } from "./format.js";

const FINAL = ["successful", "failed", "dismissed"];
const items = new Map();      // job id -> {li, job, following}
const waiting = new Map();    // job id -> resolve({job, results}) of execute()
let hooks = { finished: () => {}, scanName: () => "" };

export function initJobs(callbacks) {
  hooks = { ...hooks, ...callbacks };
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

/** What a job works on: "scan #2 “Block 7”", or the two runs it compares. */
function target(job) {
  if (job.scan) {
    const name = hooks.scanName(job.scan);
    return `scan #${job.scan}${name ? ` “${name}”` : ""}`;
  }
  if (job.runs) return `runs ${(job.runs.before || "?").slice(0, 8)} → ${(job.runs.after || "?").slice(0, 8)}`;
  return "";
}

/** The scans' names are known (or changed): name them again in every job. */
export function relabelJobs() {
  for (const entry of items.values()) entry.li.querySelector(".job-target").textContent = target(entry.job);
}

function render(entry) {
  const { li, job } = entry;
  const pct = Math.round(job.progress ?? 0);
  li.dataset.status = job.status;
  li.dataset.progress = String(pct);
  const seen = (li.dataset.progressSeen || "").split(",").filter(Boolean);
  if (seen[seen.length - 1] !== String(pct)) seen.push(String(pct));
  li.dataset.progressSeen = seen.slice(-50).join(",");
  li.className = `job job-${job.status}`;
  li.querySelector(".job-status").textContent = `${job.status} ${pct} %`;
  li.querySelector(".progress > div").style.width = `${pct}%`;
  li.querySelector(".job-target").textContent = target(job);
  const msg = li.querySelector(".job-message");
  msg.textContent = job.message || "";
  msg.classList.toggle("error-text", job.status === "failed");
}

function add(job, { top = false } = {}) {
  let entry = items.get(job.jobID);
  if (entry) {
    entry.job = { ...entry.job, ...job };
    render(entry);
    return entry;
  }
  const li = document.createElement("li");
  li.dataset.job = job.jobID;
  li.innerHTML = `<div class="job-head"><b>${esc(job.processID || "job")}</b> <span class="job-target"></span> <span class="job-status"></span>` +
    `<button type="button" class="job-dismiss" title="dismiss: stop it, or forget its results">✕</button></div>` +
    `<div class="progress"><div></div></div><div class="job-message muted"></div>` +
    `<div class="muted job-when">${esc(when(job.created))} · ${esc(job.jobID.slice(0, 8))}</div><div class="job-results"></div>`;
  const list = document.getElementById("jobs");
  list.querySelector(".muted-empty")?.remove();
  if (top) list.prepend(li);
  else list.append(li);
  entry = { li, job, following: false };
  items.set(job.jobID, entry);
  li.querySelector(".job-dismiss").addEventListener("click", () => dismiss(job.jobID));
  render(entry);
  return entry;
}

async function dismiss(id) {
  const entry = items.get(id);
  const response = await api(`/jobs/${id}`, { method: "DELETE" });
  if (response.ok || response.status === 404) {
    entry.closed = true;
    entry.li.remove();
    items.delete(id);
    hooks.finished({ jobID: id, status: "dismissed" });
  } else {
    const problem = await response.json().catch(() => ({}));
    entry.li.querySelector(".job-message").textContent = problem.detail || `could not dismiss (HTTP ${response.status})`;
  }
}

async function follow(entry) {
  if (entry.following) return;
  entry.following = true;
  entry.live = true;
  const id = entry.job.jobID;
  while (!entry.closed && !FINAL.includes(entry.job.status)) {
    try {
      const token = await freshToken();
      const response = await fetch(`/jobs/${id}/events`, {
        headers: { Accept: "text/event-stream", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const frames = buffer.split("\n\n");
        buffer = frames.pop();
        for (const frame of frames) {
          const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (!data) continue;
          const update = JSON.parse(data);
          entry.job = { ...entry.job, ...update };
          render(entry);
        }
      }
    } catch (err) {
      await new Promise((r) => setTimeout(r, 2000));
    }
    if (!FINAL.includes(entry.job.status)) {
      // the stream closed early: read the job (also when events were lost), then listen again
      try {
        entry.job = { ...entry.job, ...(await apiJSON(`/jobs/${id}`)) };
        render(entry);
      } catch (err) {
        if (err.status === 404) break;
      }
    }
  }
  entry.following = false;
  if (!entry.closed) await settled(entry);
}

async function settled(entry) {
  const { job, li } = entry;
  let results = null;
  if (job.status === "successful" && !entry.resultsShown) {
    entry.resultsShown = true;
    try {
      results = await apiJSON(`/jobs/${job.jobID}/results`);
      const kinds = ["chm", "dtm", "metrics", "trees", "crowns", "chm_diff", "change"].filter((k) => results[k]);
      const areas = Object.entries(results.areas || {}).filter(([k]) => k !== "nodata")
        .map(([k, a]) => `${k.replace(/_/g, " ")} ${num(a.ha, 2)} ha`);
      li.querySelector(".job-results").innerHTML = (kinds.length ? `results: ${esc(kinds.join(", "))}` : "") +
        (areas.length ? `<div class="job-areas">${esc(areas.join(" · "))}</div>` : "");
      await hooks.finished(job, results, { live: Boolean(entry.live) });
    } catch (err) { /* results removed meanwhile */ }
  } else if (job.status === "failed") {
    await hooks.finished(job, null, { live: Boolean(entry.live) });
  }
  const resolve = waiting.get(job.jobID);
  if (resolve) {
    waiting.delete(job.jobID);
    resolve({ job, results });
  }
}

function post(process, inputs) {
  return apiJSON(`/processes/${process}/execution`, {
    method: "POST", body: JSON.stringify({ inputs }),
    headers: { "Content-Type": "application/json", Prefer: "respond-async" },
  });
}

/** Start `process` as an asynchronous job, shown on top of the list and followed; the job. */
export async function start(process, inputs) {
  const job = await post(process, inputs);
  track(job.jobID);
  return job;
}

/** Run `process` as a followed job: its final {job, results} (results null unless successful). */
export async function execute(process, inputs) {
  const job = await post(process, inputs);
  const done = new Promise((resolve) => waiting.set(job.jobID, resolve));
  track(job.jobID);
  const out = await done;
  if (out.job.status !== "successful") {   // the whole document: its message says why
    out.job = { ...out.job, ...(await apiJSON(`/jobs/${job.jobID}`).catch(() => ({}))) };
  }
  return out;
}

/** A job started from this page (a process form, an upload's ingestion): shown on top, followed. */
export async function track(id) {
  let job;
  try {
    job = await apiJSON(`/jobs/${id}`);
  } catch (err) {
    job = { jobID: id, status: "accepted", progress: 0 };
  }
  const entry = add(job, { top: true });
  entry.fresh = true;
  follow(entry);
}

/** Another visitor now (signed in, out, or someone else): forget every job shown. */
export function resetJobs() {
  for (const [id, entry] of items) {
    entry.closed = true;
    entry.li.remove();
    items.delete(id);
  }
}

/** The visitor's job history (newest first); running ones are followed live. */
export async function loadJobs() {
  const list = document.getElementById("jobs");
  let doc;
  try {
    doc = await apiJSON("/jobs?limit=20");
  } catch (err) {
    for (const [id, entry] of items) {
      entry.closed = true;
      entry.li.remove();
      items.delete(id);
    }
    list.innerHTML = `<li class="muted muted-empty">${err.status === 401 ? "sign in to see your jobs" : "no jobs"}</li>`;
    return;
  }
  const jobs = doc.jobs || [];
  const ids = new Set(jobs.map((j) => j.jobID));
  for (const [id, entry] of items) {
    if (!ids.has(id) && !entry.fresh) {
      entry.closed = true;
      entry.li.remove();
      items.delete(id);
    }
  }
  if (!jobs.length && !items.size) list.innerHTML = '<li class="muted muted-empty">no jobs yet</li>';
  for (const job of jobs) {
    const entry = add(job);
    if (!FINAL.includes(job.status)) follow(entry);
    else if (job.status === "successful") settled(entry);
  }
}
