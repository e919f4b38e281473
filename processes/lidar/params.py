"""Every knob of the pipeline: the cell sizes, the tiling and one algorithm object per
family (see :mod:`.algorithms`), with lidR/PDAL names inside the objects."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from . import algorithms
from .crowns import dalponte2016, watershed
from .errors import InvalidParameter
from .ground import csf, ivf, sor
from .surface import chm_cell, p2r, pitfree
from .terrain import knnidw, tin
from .trees import lmf

NUMBERS = ("dtm_res", "chm_res", "metrics_res", "rumple_res", "tile_size", "buffer", "hmax", "zmin")


@dataclass(frozen=True)
class Params:
    """The defaults are chosen on both truth families (bench/accuracy.py).

    ``dtm_res`` 0.5 m, the CHM's cell: the terrain is a TIN evaluated at cell centres, and a
    1 m raster read on a 0.5 m grid is off by the slope times a quarter of its cell on
    average (DTM RMSE on the independent steep stand 0.124 m at 1 m, 0.021 m at 0.5 m; 0.131
    and 0.046 m when the engine classifies the ground itself), for four times the cells of a
    raster that costs little to write.

    ``chm_res`` None: chosen from the scan's first-return spacing when a run starts
    (:func:`.surface.chm_cell`, 0.5 m from 2.8 first returns/m²); the summary records it.
    """

    dtm_res: float = 0.5
    chm_res: float | None = None
    metrics_res: float = 20.0
    rumple_res: float = 1.0
    tile_size: float = 250.0
    buffer: float = 30.0
    hmax: float = 90.0  # normalised heights above this are noise (birds, clouds)
    zmin: float = -2.0  # points this far below the terrain are noise (multipath)
    reuse_ground: bool = True  # keep the file's class 2 when there is one
    ground: csf = csf()
    noise: ivf | sor | None = ivf()
    dtm: tin | knnidw = tin()
    chm: pitfree | p2r = pitfree()
    trees: lmf = lmf()
    crowns: watershed | dalponte2016 = watershed()

    def for_scan(self, first_density: float) -> "Params":
        """These parameters with the CHM cell of a scan of ``first_density`` first returns
        per m² when it is not given (see :func:`.surface.chm_cell`)."""
        if self.chm_res is not None:
            return self
        return replace(self, chm_res=chm_cell(first_density, self.metrics_res))

    def check(self) -> None:
        for name in ("dtm_res", "chm_res", "metrics_res", "rumple_res", "tile_size"):
            v = getattr(self, name)
            if v is None and name == "chm_res":
                continue
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise InvalidParameter(f"{name} must be a positive number, got {v!r}")
        if not (self.buffer >= 0):
            raise InvalidParameter(f"buffer must be >= 0, got {self.buffer!r}")
        reach = getattr(self.dtm, "max_radius", 0.0)
        if self.buffer > 0 and reach > self.buffer:
            raise InvalidParameter(f"buffer ({self.buffer} m) must be at least the TIN's max_radius ({reach} m) "
                                   "for tiles to match the whole scan")
        for name in ("dtm_res", "chm_res", "rumple_res"):
            if getattr(self, name) is None:
                continue
            r = self.metrics_res / getattr(self, name)
            if abs(r - round(r)) > 1e-9:
                raise InvalidParameter(f"metrics_res ({self.metrics_res}) must be a multiple of {name}")

    def to_dict(self) -> dict[str, Any]:
        """JSON of every field (algorithms as ``{"algorithm": name, ...}``); :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = algorithms.describe(v) if f.name in algorithms.FAMILIES else v
        return out

    @classmethod
    def from_dict(cls, given: dict[str, Any], base: "Params | None" = None) -> "Params":
        """``base`` (the defaults) with the fields of ``given``: numbers, ``reuse_ground`` and one
        algorithm description per family (see :func:`algorithms.build`)."""
        changes: dict[str, Any] = {}
        for key, v in given.items():
            if key in algorithms.FAMILIES:
                changes[key] = algorithms.build(key, v)
            elif key == "chm_res" and v is None:
                changes[key] = None
            elif key in NUMBERS:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidParameter(f"{key} must be a number, got {v!r}")
                changes[key] = float(v)
            elif key == "reuse_ground":
                changes[key] = bool(v)
            else:
                raise InvalidParameter(f"unknown parameter {key!r}")
        p = replace(base or cls(), **changes)
        p.check()
        return p
