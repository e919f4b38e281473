// Numbers as people read them: units, sensible rounding, the metric names of lidR.

export function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

/** A number rounded for reading: integers as they are, else at most 2 decimals (1 from 100 up,
 * none from 1000 up, 2 significant digits below 0.01): never a 15-digit float. */
export function num(value, decimals = null) {
  if (value === null || value === undefined || value === "") return "–";
  const v = Number(value);
  if (!Number.isFinite(v)) return String(value);
  if (decimals !== null) return v.toFixed(decimals);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  if (a >= 100) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a >= 0.01) return v.toFixed(2);
  return v.toPrecision(2);
}

const UNIT_SYMBOL = { metre: "m", meter: "m", m: "m", percent: "%", count: "", intensity: "", 1: "", "": "" };

export function unitSymbol(unit) {
  if (unit === null || unit === undefined) return "";
  return UNIT_SYMBOL[unit] ?? unit;
}

/** lidR's unit of a metric (mirrors processes/lidar/metrics.py `_unit`). */
export function metricUnit(name) {
  if (["zmax", "zmean", "zsd"].includes(name) || /^zq\d+$/.test(name) || name === "h_mean") return "m";
  if (["itot", "imax", "imean", "isd"].includes(name)) return "";
  if (name === "n") return "points";
  if (["zskew", "zkurt", "zentropy", "iskew", "ikurt", "rumple"].includes(name)) return "";
  if (name === "lai") return "m²/m²";
  if (name === "area_m2") return "m²";
  if (/^(pzabove|zpcum|ipground|ipcumzq|p\dth|pground|cover|gap)/.test(name)) return "%";
  return "";
}

export const METRIC_DEFINITIONS = {
  zmax: "highest return height", zmean: "mean return height", zsd: "standard deviation of heights",
  zskew: "skewness of heights", zkurt: "kurtosis of heights", zentropy: "entropy of the height distribution",
  pzabovezmean: "share of returns above the mean height", pzabove2: "share of returns above 2 m",
  cover: "first returns above 2 m (canopy cover)", gap: "last returns at or below 2 m",
  lai: "leaf area index (sum of the leaf area density profile)", rumple: "canopy surface / ground area",
  n: "number of returns", pground: "share of ground returns", area_m2: "plot area",
  itot: "sum of intensities", imean: "mean intensity", imax: "highest intensity",
};

export function metricTitle(name) {
  const q = /^zq(\d+)$/.exec(name);
  if (q) return `${q[1]}th height percentile`;
  const c = /^zpcum(\d)$/.exec(name);
  if (c) return `cumulative share of returns in the lowest ${c[1]}0 % of heights`;
  const p = /^p(\d)th$/.exec(name);
  if (p) return `share of returns that are return ${p[1]}`;
  return METRIC_DEFINITIONS[name] || name;
}

export function withUnit(value, unit, decimals = null) {
  const u = unitSymbol(unit);
  return `${num(value, decimals)}${u ? (u === "%" ? " %" : ` ${u}`) : ""}`;
}

export function bytes(n) {
  if (!Number.isFinite(n)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** The leaf-area density profile (z in m, lad in m²/m³) as a small SVG chart. */
export function ladChart(profile) {
  const z = (profile && profile.z) || [];
  const lad = (profile && profile.lad) || [];
  if (!z.length) return "";
  const W = 150, H = 90, L = 26, B = 14;
  const zmax = Math.max(...z) || 1, lmax = Math.max(...lad.map((v) => v || 0)) || 1;
  const pts = z.map((zi, i) => `${(L + ((lad[i] || 0) / lmax) * (W - L - 4)).toFixed(1)},` +
                               `${(H - B - (zi / zmax) * (H - B - 6)).toFixed(1)}`);
  return `<svg class="lad-chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" ` +
    `aria-label="leaf area density profile">` +
    `<line x1="${L}" y1="${H - B}" x2="${W - 2}" y2="${H - B}" stroke="#888"/>` +
    `<line x1="${L}" y1="4" x2="${L}" y2="${H - B}" stroke="#888"/>` +
    `<polyline fill="none" stroke="#2d6a4f" stroke-width="2" points="${L},${H - B} ${pts.join(" ")}"/>` +
    `<text x="2" y="10" font-size="9">${num(zmax, 0)} m</text><text x="2" y="${H - B}" font-size="9">0</text>` +
    `<text x="${L}" y="${H - 2}" font-size="9">LAD 0…${num(lmax)} m²/m³</text></svg>`;
}
