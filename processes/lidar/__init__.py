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
- ``change``     two runs compared: CHM difference, canopy lost / gained / grown, tree growth
- ``crowns``     ``watershed()`` / ``dalponte2016()`` crowns and polygons
- ``metrics``    lidR standard metrics, per plot and per grid cell
- ``grid``       lattice-aligned grids and rasters
- ``cog``        Cloud Optimized GeoTIFF writing and validation
- ``algorithms`` the algorithm contract: families, parameters, registry, schemas, CLI flags
- ``params``     ``Params``: cell sizes, tiling and one algorithm per family
- ``tiling``     buffered tiles on a global lattice, points spilled to them
- ``tile``       every step on one buffered tile (``process_tile``), one height normalisation
- ``assemble``   tile results merged into COGs, GeoJSON and the run's summary
- ``parts``      a tile's result between workers (no pickle) and their merge (fan-out)
- ``pipeline``   ``run`` / ``inventory``: the whole scan in one streaming pass
- ``plots``      ``polygon_metrics``: metrics of field plots
- ``aba``        area-based models of plot attributes: best-subset OLS / random forest, cross-validation
- ``aba_map``    area-based models over grid metrics: maps, extrapolation flags, totals with a CI
- ``aba_forest`` simulated forests with known per-hectare attributes and field plots (ABA truth)
- ``point_writer`` ground-classified or normalised points written as LAS/LAZ
- ``synthetic``  synthetic forests with known truth (stands, terrain, pulses, returns)
- ``synthetic_crowns`` their crown surfaces (smooth or rough) and herb layer
- ``cli``        ``python -m processes.lidar STEP INPUT... --out DIR``
"""
from .crowns import dalponte2016, watershed
from .errors import (CorruptFile, EmptyResult, IncompatibleInputs, InvalidParameter, InvalidPointCloud, LidarError,
                     NoGroundPoints, TruncatedFile, UnknownCRS)
from .footprint import footprint
from .ground import csf, ivf, sor
from .params import Params
from .parts import load_tile_result, merge_tile_results, save_tile_result
from .pipeline import inventory, run
from .plots import polygon_metrics
from .point_writer import write_points
from .tile import process_tile
from .tiling import plan_tiles, read_tile
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
