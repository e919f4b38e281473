// Bundles src/viewer.js with MapLibre GL (from node_modules) into ../server/static/viewer,
// with MapLibre's CSS and the page itself: the server then serves everything, no CDN.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "server", "static", "viewer");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "viewer.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outfile: join(out, "viewer.js"),
  logLevel: "warning",
});
copyFileSync(join(here, "node_modules", "maplibre-gl", "dist", "maplibre-gl.css"), join(out, "maplibre-gl.css"));
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
copyFileSync(join(here, "src", "viewer.css"), join(out, "viewer.css"));
console.log(`viewer built into ${out}`);
await import("./pygeoapi-assets.mjs");   // Bootstrap, Leaflet, Swagger UI for pygeoapi's HTML pages
