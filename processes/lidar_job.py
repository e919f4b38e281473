"""What the LiDAR process plugins share: the common inputs, running the engine over a
scan in buffered tiles, and turning its files into artifacts for the job system
(geometries in EPSG:4326, rasters described for the `rasters` table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import rasterio
import shapely
from pyproj import CRS, Transformer
from shapely import wkt as shapely_wkt
from shapely.ops import transform as shapely_transform

from .base import JobContext, ProcessInputError, ScanInput, number_input, scan_input
from .lidar import Params, algorithms, polygon_metrics, run
from .lidar.errors import InvalidParameter

COMMON_INPUTS = {
    "scan": scan_input(),
    "tile_size": number_input("Tile size", "Side of a processing tile's core (m)", 250, 50, 2000),
    "buffer": number_input("Buffer", "Margin read around each tile (m)", 30, 0, 200),
}
GROUND_INPUTS = {
    "reuse_ground": {"title": "Reuse ground class", "description": "Use the file's class 2 when present",
                     "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "boolean", "default": True}},
    **{family: algorithms.input_description(family) for family in ("noise", "ground", "dtm")},
}
CANOPY_INPUTS = {"chm": algorithms.input_description("chm")}
TREE_INPUTS = {"trees": algorithms.input_description("trees")}
CROWN_INPUTS = {"crowns": algorithms.input_description("crowns")}
ENGINE_INPUTS = ("tile_size", "buffer", *GROUND_INPUTS, *CANOPY_INPUTS, *TREE_INPUTS, *CROWN_INPUTS)


def resolution_input(default: float | None, what: str) -> dict:
    """The ``resolution`` input; ``default`` None: the CHM cell chosen from the scan (:func:`.lidar.surface.chm_cell`)."""
    chosen = "; default: from the scan's first-return spacing (0.5 m from 2.8 first returns/m²)"
    return {"resolution": number_input("Resolution", f"Cell size of the {what} (m){chosen if default is None else ''}",
                                       default, 0.1, 100)}


def engine_params(inputs: dict, **fields: Any) -> Params:
    """The engine's parameters from a process's inputs (the algorithm inputs are the objects
    of :mod:`.lidar.algorithms`, as JSON) and the process's own ``fields`` (cell sizes)."""
    try:
        return Params.from_dict({k: inputs[k] for k in ENGINE_INPUTS if k in inputs} | fields)
    except InvalidParameter as err:
        raise ProcessInputError(str(err))


def to_wgs84(crs: CRS):
    transformer = Transformer.from_crs(crs, 4326, always_xy=True)
    return lambda geom: shapely_transform(transformer.transform, geom)


def scan_crs(scan: ScanInput, summary: dict) -> CRS:
    return CRS.from_wkt(summary["crs_wkt"])


def run_scan(ctx: JobContext, scan: ScanInput, inputs: dict, products: set[str], params: Params,
             span: tuple[float, float] = (0, 99)) -> dict:
    """Run the engine over the scan's files; progress mapped into `span` of the job."""
    lo, hi = span
    out = ctx.workdir / "products"
    return run([str(f) for f in scan.files], out, crs=scan.crs, params=params, products=products,
               progress=lambda pct, msg: ctx.progress(lo + (hi - lo) * pct / 100, msg), workdir=ctx.workdir)


def raster_artifacts(scan: ScanInput, summary: dict, kinds: dict[str, str]) -> list[dict]:
    """Artifacts for the rasters the run wrote; `kinds` maps product name to raster kind."""
    crs = scan_crs(scan, summary)
    project = to_wgs84(crs)
    arts = []
    for product, kind in kinds.items():
        path = summary["products"].get(product)
        if not path:
            continue
        with rasterio.open(path) as ds:
            bounds = shapely.box(*ds.bounds)
            res = abs(ds.res[0]) * summary.get("units_to_metre", 1.0)
            bands = list(ds.descriptions) if any(ds.descriptions) else [f"band{i + 1}" for i in range(ds.count)]
            stats = {}
            if ds.count == 1:
                band = ds.read(1, masked=True)
                if band.count():
                    stats = {"min": float(band.min()), "max": float(band.max()), "mean": float(band.mean())}
        arts.append({"kind": "raster", "raster_kind": kind, "path": path, "scan_id": scan.id,
                     "crs_epsg": summary.get("crs_epsg"), "resolution_m": res, "bands": bands, "stats": stats,
                     "footprint_wkt4326": project(bounds).wkt})
    return arts


def tree_artifact(scan: ScanInput, summary: dict) -> dict:
    """Trees (and their crowns when segmented) in EPSG:4326, keyed to the scan."""
    crs = scan_crs(scan, summary)
    project = to_wgs84(crs)
    trees_path = summary["products"].get("trees")
    crowns_path = summary["products"].get("crowns")
    crowns = {}
    if crowns_path:
        for f in json.loads(Path(crowns_path).read_text())["features"]:
            crowns[f["properties"]["tree_id"]] = shapely.geometry.shape(f["geometry"])
    trees = []
    for f in json.loads(Path(trees_path).read_text())["features"] if trees_path else []:
        x, y = f["geometry"]["coordinates"][:2]
        p = f["properties"]
        lon_lat = project(shapely.Point(x, y))
        crown = crowns.get(p["tree_id"])
        trees.append({"x": x, "y": y, "lon": lon_lat.x, "lat": lon_lat.y, "height": p["height"],
                      "apex_height": p.get("apex_height"),
                      "crown_area": p.get("crown_area"), "crown_diameter": p.get("crown_diameter"),
                      "crown_wkt4326": _polygon(project(crown)).wkt if crown is not None else None})
    return {"kind": "trees", "scan_id": scan.id, "trees": trees}


def _polygon(geom):
    """Crowns are stored as polygons: the largest part of a multipolygon."""
    if geom.geom_type == "MultiPolygon":
        return max(geom.geoms, key=lambda g: g.area)
    return geom


def plot_metrics_artifact(ctx: JobContext, scan: ScanInput, plot_ids: list[int] | None, params: Params,
                          span: tuple[float, float]) -> tuple[dict, int]:
    plots = ctx.plots(scan, plot_ids)
    if not plots:
        return {"kind": "plot_metrics", "values": {}}, 0
    lo, hi = span
    values = polygon_metrics([str(f) for f in scan.files], [shapely_wkt.loads(p.geometry_wkt) for p in plots],
                             crs=scan.crs, params=params,
                             progress=lambda pct, msg: ctx.progress(lo + (hi - lo) * pct / 100, msg))
    cleaned = {}
    for plot, metrics in zip(plots, values):
        cleaned[plot.id] = {k: v for k, v in metrics.items() if k != "index"}
    return {"kind": "plot_metrics", "values": cleaned}, len(plots)


def plots_input() -> dict:
    return {"plots": {"title": "Plots", "description": "Plot ids (default: the plots that intersect the scan)",
                      "minOccurs": 0, "maxOccurs": 1,
                      "schema": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 10000}}}


def metadata(process_id: str, title: str, description: str, inputs: dict, outputs: dict) -> dict:
    return {"version": "1.0.0", "id": process_id, "title": title, "description": description,
            "jobControlOptions": ["async-execute", "dismiss"], "keywords": ["lidar", "forestry"],
            "inputs": inputs, "outputs": outputs,
            "links": [{"rel": "about", "type": "text/html", "title": "lidR", "href": "https://r-lidar.github.io/lidRbook/"}],
            "example": {"inputs": {"scan": 1}}}


def link_output(title: str, media: str = "application/json") -> dict:
    return {"title": title, "schema": {"type": "object", "contentMediaType": media}}


class ProductProcess:
    """Mixin for the single-step processes: run `products` over the scan and commit
    the rasters in `rasters` (product → raster kind) and, with `trees`, the trees."""

    products: set[str] = set()
    rasters: dict[str, str] = {}
    trees: bool = False
    resolution_field = "chm_res"

    def run(self, inputs: dict, ctx: JobContext):
        from .base import Outcome
        scan = ctx.scan(inputs["scan"])
        fields = {self.resolution_field: float(inputs["resolution"])} if "resolution" in inputs else {}
        params = engine_params(inputs, **fields)
        summary = run_scan(ctx, scan, inputs, set(self.products), params)
        artifacts = raster_artifacts(scan, summary, self.rasters)
        if self.trees:
            artifacts.append(tree_artifact(scan, summary))
        keep = ("point_count", "ground_share", "canopy_cover", "tree_count", "crs_epsg")
        return Outcome(outputs={"summary": {k: summary.get(k) for k in keep}}, artifacts=artifacts)
