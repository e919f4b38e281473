"""Canopy's LiDAR analysis library: pure numpy/scipy/scikit-image, no server imports.

Modules (one job each):

- ``errors``     the LidarError family
- ``validate``   ``inspect(path)``: header checked against the file, header facts
- ``crs``        CRS from WKT / GeoTIFF keys, broken compound WKT, feet, overrides
- ``read``       scans of several files streamed in chunks (parallel LAZ, sequential fallback)
- ``points``     the Points column container
- ``footprint``  point count, density, footprint polygon in one streamed pass
- ``ground``     ``csf()`` ground classification, ``sor()`` / ``ivf()`` noise
- ``tin``        Delaunay TIN with fast vectorised point location
- ``terrain``    ``tin()`` / ``knnidw()`` DTM, height normalisation
- ``surface``    ``p2r()`` / ``pitfree()`` CHM (cliff fill from the point spacing)
- ``trees``      ``lmf()`` tree detection, ``crown_window`` (window from height and cover), apex heights
- ``accuracy``   scoring against known truth (both truth families), the naive reference pipeline
- ``crowns``     ``watershed()`` / ``dalponte2016()`` crowns and polygons
- ``metrics``    lidR standard metrics, per plot and per grid cell
- ``grid``       lattice-aligned grids and rasters
- ``cog``        Cloud Optimized GeoTIFF writing and validation
- ``pipeline``   buffered tiles, ``inventory``, ``polygon_metrics``, fan-out helpers
- ``synthetic``  synthetic forests with known truth
- ``cli``        ``python -m processes.lidar STEP INPUT... --out DIR``
"""
from .crowns import dalponte2016, watershed
from .errors import (CorruptFile, EmptyResult, IncompatibleInputs, InvalidParameter, InvalidPointCloud, LidarError,
                     NoGroundPoints, TruncatedFile, UnknownCRS)
from .footprint import footprint
from .ground import csf, ivf, sor
from .pipeline import (Params, inventory, load_tile_result, merge_tile_results, plan_tiles, polygon_metrics,
                       process_tile, read_tile, run, save_tile_result, write_points)
from .surface import p2r, pitfree
from .terrain import knnidw, tin
from .trees import lmf
from .validate import inspect

__all__ = [
    "CorruptFile", "EmptyResult", "IncompatibleInputs", "InvalidParameter", "InvalidPointCloud", "LidarError",
    "NoGroundPoints", "TruncatedFile", "UnknownCRS", "Params", "csf", "dalponte2016", "footprint", "inspect",
    "inventory", "ivf", "knnidw", "lmf", "load_tile_result", "merge_tile_results", "p2r", "pitfree", "plan_tiles",
    "polygon_metrics", "process_tile", "read_tile", "run", "save_tile_result", "sor", "tin", "watershed",
    "write_points",
]
