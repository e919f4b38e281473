"""What the LiDAR process plugins share: the common inputs, running the engine over a
scan in buffered tiles, and turning its files into artifacts for the job system
(geometries in EPSG:4326, rasters described for the `rasters` table)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import rasterio
import shapely
from pyproj import CRS, Transformer
from shapely import wkt as shapely_wkt
from shapely.ops import transform as shapely_transform

from .base import JobContext, ProcessInputError, ScanInput, number_input, scan_input
from .lidar import crowns as crownsmod
from .lidar.errors import InvalidParameter
from .lidar.ground import csf
from .lidar.pipeline import Params, polygon_metrics, run
from .lidar.trees import lmf

COMMON_INPUTS = {
    "scan": scan_input(),
    "tile_size": number_input("Tile size", "Side of a processing tile's core (m)", 250, 50, 2000),
    "buffer": number_input("Buffer", "Margin read around each tile (m)", 30, 0, 200),
}
GROUND_INPUTS = {
    "reuse_ground": {"title": "Reuse ground class", "description": "Use the file's class 2 when present",
                     "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "boolean", "default": True}},
    "cloth_resolution": number_input("CSF cloth resolution", "Cloth grid spacing (m)", 0.5, 0.1, 5),
    "rigidness": {"title": "CSF rigidness", "description": "1 steep terrain ... 3 flat terrain", "minOccurs": 0,
                  "maxOccurs": 1, "schema": {"type": "integer", "minimum": 1, "maximum": 3, "default": 1}},
    "class_threshold": number_input("CSF class threshold", "Distance to the cloth for ground (m)", 0.25, 0.01, 2),
}
TREE_INPUTS = {
    "hmin": number_input("Minimum tree height", "Local maxima lower than this are not trees (m)", 2, 0.5, 50),
    "ws": number_input("Window size", "Fixed local-maximum window diameter (m); default (0): from height and canopy cover",
                       0, 0, 30),
}
CROWN_INPUTS = {
    "algorithm": {"title": "Crown segmentation", "description": "watershed or dalponte2016", "minOccurs": 0,
                  "maxOccurs": 1, "schema": {"type": "string", "enum": ["watershed", "dalponte2016"],
                                             "default": "watershed"}},
}


def resolution_input(default: float, what: str) -> dict:
    return {"resolution": number_input("Resolution", f"Cell size of the {what} (m)", default, 0.1, 100)}


def params_from(inputs: dict, **fields: Any) -> Params:
    """The engine's parameters from a process's inputs (names as lidR/PDAL name them)."""
    p = Params(tile_size=float(inputs.get("tile_size", 250)), buffer=float(inputs.get("buffer", 30)), **fields)
    if "cloth_resolution" in inputs:
        p = replace(p, reuse_ground=bool(inputs.get("reuse_ground", True)),
                    ground=csf(cloth_resolution=float(inputs["cloth_resolution"]),
                               rigidness=int(inputs.get("rigidness", 1)),
                               class_threshold=float(inputs.get("class_threshold", 0.25))))
    if "hmin" in inputs:
        ws = float(inputs.get("ws") or 0)
        p = replace(p, trees=lmf(hmin=float(inputs["hmin"])) if ws == 0 else lmf(ws=ws, hmin=float(inputs["hmin"])))
    if inputs.get("algorithm") == "dalponte2016":
        p = replace(p, crowns=crownsmod.dalponte2016())
    try:
        p.check()
    except InvalidParameter as err:
        raise ProcessInputError(str(err))
    return p


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
        params = params_from(inputs, **fields)
        summary = run_scan(ctx, scan, inputs, set(self.products), params)
        artifacts = raster_artifacts(scan, summary, self.rasters)
        if self.trees:
            artifacts.append(tree_artifact(scan, summary))
        keep = ("point_count", "ground_share", "canopy_cover", "tree_count", "crs_epsg")
        return Outcome(outputs={"summary": {k: summary.get(k) for k in keep}}, artifacts=artifacts)
