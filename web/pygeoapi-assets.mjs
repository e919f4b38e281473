// Copies what pygeoapi's HTML pages would load from CDNs (Bootstrap's CSS, Leaflet and its
// marker clusters, Swagger UI) from node_modules into ../server/static/vendor, which the
// server serves at /static/vendor/ (server/pages/): the pages then work offline.
// server/pages/templates.py rewrites pygeoapi's templates to point at these paths.
import { cpSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "server", "static", "vendor");
const files = {
  "bootstrap/dist/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
  "leaflet/dist/leaflet.js": "leaflet/leaflet.js",
  "leaflet/dist/leaflet.css": "leaflet/leaflet.css",
  "leaflet/dist/images": "leaflet/images",
  "leaflet.markercluster/dist/MarkerCluster.css": "leaflet.markercluster/MarkerCluster.css",
  "leaflet.markercluster/dist/MarkerCluster.Default.css": "leaflet.markercluster/MarkerCluster.Default.css",
  "leaflet.markercluster/dist/leaflet.markercluster.js": "leaflet.markercluster/leaflet.markercluster.js",
  "swagger-ui-dist/swagger-ui.css": "swagger-ui/swagger-ui.css",
  "swagger-ui-dist/swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
  "swagger-ui-dist/swagger-ui-standalone-preset.js": "swagger-ui/swagger-ui-standalone-preset.js",
  "swagger-ui-dist/favicon-16x16.png": "swagger-ui/favicon-16x16.png",
  "swagger-ui-dist/favicon-32x32.png": "swagger-ui/favicon-32x32.png",
};
for (const [from, to] of Object.entries(files)) {
  mkdirSync(dirname(join(out, to)), { recursive: true });
  cpSync(join(modules, from), join(out, to), { recursive: true });
}
console.log(`pygeoapi page assets copied into ${out}`);
