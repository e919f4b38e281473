"""Tile results merged into a scan's products: COG mosaics, GeoJSON written feature by
feature, and the run's summary (the same for a run in one process and a fanned-out one)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from shapely import affinity

from . import metrics as metricsmod
from .cog import MosaicWriter
from .grid import Grid
from .params import Params
from .read import Scan
from .tile import TileResult
from .tiling import plan_tiles


class FeatureWriter:
    """A GeoJSON FeatureCollection written feature by feature (memory stays flat however
    many trees a scan holds); appears under its name only when closed."""

    def __init__(self, path: Path, crs_epsg: int | None):
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.fh = open(self.part, "w")
        self.count = 0
        head = {"type": "FeatureCollection"}
        if crs_epsg:
            head["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs_epsg}"}}
        self.fh.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"features":[')

    def add(self, feature: dict) -> None:
        self.fh.write(("," if self.count else "") + json.dumps(feature, separators=(",", ":")))
        self.count += 1

    def close(self) -> Path:
        self.fh.write("]}")
        self.fh.close()
        self.part.replace(self.path)
        return self.path

    def abort(self) -> None:
        self.fh.close()
        self.part.unlink(missing_ok=True)


COUNTS = ("points", "ground", "first", "first_above2", "noise", "occupied_m2")


class Assembler:
    """Merges tile results into the scan's products in ``out_dir``."""

    def __init__(self, scan: Scan, metrics_grid: Grid, params: Params, out_dir: Path, products: set[str]):
        self.f = to_native = 1.0 / scan.crs.xy_to_m
        scan_crs, crs_epsg = scan.crs.crs, scan.crs.epsg
        self.writers: dict[str, MosaicWriter] = {}
        self.bounds = b = metrics_grid.bounds
        if "dtm" in products:
            self.writers["dtm"] = MosaicWriter(out_dir / "dtm.tif", Grid.covering(b, params.dtm_res), scan_crs,
                                               ["elevation"], to_native=to_native)
        if "chm" in products:
            self.writers["chm"] = MosaicWriter(out_dir / "chm.tif", Grid.covering(b, params.chm_res), scan_crs,
                                               ["height"], to_native=to_native)
        if "grid_metrics" in products:
            self.writers["grid_metrics"] = MosaicWriter(out_dir / "grid_metrics.tif", metrics_grid, scan_crs,
                                                        metricsmod.METRIC_NAMES, to_native=to_native,
                                                        units=metricsmod.METRIC_UNITS)
        self.features: dict[str, FeatureWriter] = {}
        if products & {"trees", "crowns"}:
            self.features["trees"] = FeatureWriter(out_dir / "trees.geojson", crs_epsg)
        if "crowns" in products:
            self.features["crowns"] = FeatureWriter(out_dir / "crowns.geojson", crs_epsg)
        self.tree_count = 0
        self.height_sum, self.height_max = 0.0, None
        self.stats = {k: 0 for k in COUNTS} | {"tiles": 0, "tiles_without_ground": 0}
        self.timings: dict[str, float] = {}
        self.band_sums = np.zeros(len(metricsmod.METRIC_NAMES))
        self.band_counts = np.zeros(len(metricsmod.METRIC_NAMES))

    def add(self, r: TileResult) -> None:
        for key, raster in (("dtm", r.dtm), ("chm", r.chm), ("grid_metrics", r.metrics)):
            if raster is not None and key in self.writers:
                self.writers[key].write(raster.data, raster.grid)
        if r.metrics is not None:
            a = r.metrics.data.reshape(len(metricsmod.METRIC_NAMES), -1)
            ok = np.isfinite(a) & (a.shape[1] > 0)
            self.band_sums += np.where(ok, a, 0).sum(axis=1)
            self.band_counts += ok.sum(axis=1)
        t = r.trees
        for i in range(len(t.get("x", []))):
            self.tree_count += 1
            tid = self.tree_count
            props = {"tree_id": tid, "height": round(float(t["height"][i]), 3),
                     "apex_height": round(float(t["apex_height"][i]), 3),
                     "crown_area": round(float(t["crown_area"][i]), 3),
                     "crown_diameter": round(float(t["crown_diameter"][i]), 3)}
            self.height_sum += props["height"]
            self.height_max = props["height"] if self.height_max is None else max(self.height_max, props["height"])
            if "trees" in self.features:
                xy = [float(t["x"][i]) * self.f, float(t["y"][i]) * self.f]
                self.features["trees"].add({"type": "Feature", "id": tid,
                                            "geometry": {"type": "Point", "coordinates": xy}, "properties": props})
            if "crowns" in self.features and r.crowns and i < len(r.crowns) and r.crowns[i] is not None:
                poly = affinity.scale(r.crowns[i], xfact=self.f, yfact=self.f, origin=(0, 0))
                self.features["crowns"].add({
                    "type": "Feature", "id": tid, "geometry": shapely.geometry.mapping(poly),
                    "properties": {"tree_id": tid, "height": props["height"], "area": props["crown_area"],
                                   "diameter": props["crown_diameter"]}})
        for k in COUNTS:
            self.stats[k] += r.stats.get(k, 0)
        self.stats["tiles"] += 1
        self.stats["tiles_without_ground"] += int(bool(r.stats.get("no_ground")))
        for k, v in r.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v

    def finish(self) -> dict:
        paths: dict[str, str] = {}
        for key, w in self.writers.items():
            paths[key] = str(w.close())
        for key, fw in self.features.items():
            paths[key] = str(fw.close())
        return paths

    @property
    def crown_count(self) -> int:
        return self.features["crowns"].count if "crowns" in self.features else 0

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        for fw in self.features.values():
            fw.abort()

    def summary(self, scan: Scan, params: Params, products: set[str], paths: dict[str, str]) -> dict:
        """What the run made, in the scan's terms: counts, shares, trees, area, products."""
        s = self.stats
        area_ha = s["occupied_m2"] / 10_000
        return {
            "inputs": [str(f.path) for f in scan.files],
            "crs_epsg": scan.crs.epsg,
            "crs_wkt": scan.crs.wkt,
            "units_to_metre": scan.crs.xy_to_m,
            "bounds": [float(v) * self.f for v in self.bounds],
            "tiles": len(plan_tiles(scan.bounds_m, params)[1]),
            "tile_size": params.tile_size,
            "buffer": params.buffer,
            "point_count": scan.point_count,
            "points_processed": s["points"],
            "noise_points": s["noise"],
            "ground_points": s["ground"],
            "ground_share": s["ground"] / s["points"] if s["points"] else 0.0,
            "canopy_cover": s["first_above2"] / s["first"] if s["first"] else 0.0,
            "tree_count": self.tree_count,
            "crown_count": self.crown_count,
            "tree_height_mean": self.height_sum / self.tree_count if self.tree_count else None,
            "tree_height_max": self.height_max,
            # the footprint: the DTM-lattice cells of the cores that hold a point
            "area_ha": area_ha,
            "stems_per_ha": self.tree_count / area_ha if area_ha and products & {"trees", "crowns"} else None,
            "products": paths,
            "grid_metric_means": ({k: (float(sv / cv) if cv else None) for k, sv, cv in
                                   zip(metricsmod.METRIC_NAMES, self.band_sums, self.band_counts)}
                                  if "grid_metrics" in products else {}),
            "band_names": metricsmod.METRIC_NAMES if "grid_metrics" in products else [],
            "resolutions": {"dtm": params.dtm_res, "chm": params.chm_res, "metrics": params.metrics_res},
            "params": params.to_dict(),
        }

