"""`inventory-tile` (internal): one buffered tile of a big scan's forest inventory, run
as a child job on any worker; its result is shared with the parent through storage
and merged by the parent (see forest_inventory.py)."""

from __future__ import annotations

from .base import CanopyProcess, JobContext, Outcome, ProcessInputError
from .lidar import Params, process_tile, read_tile, save_tile_result
from .lidar.errors import InvalidParameter
from .lidar.pipeline import ALL_PRODUCTS
from .lidar.read import open_scan

PROCESS_METADATA = {
    "version": "1.0.0", "id": "inventory-tile", "title": "Inventory tile (internal)",
    "description": "One buffered tile of a fanned-out forest inventory.",
    "jobControlOptions": ["async-execute", "dismiss"], "keywords": ["internal"],
    "inputs": {}, "outputs": {},
}


class InventoryTileProcessor(CanopyProcess):
    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        scan = ctx.scan(inputs["scan"])
        try:
            params = Params.from_dict(inputs["params"])
        except InvalidParameter as err:
            raise ProcessInputError(str(err))
        core = tuple(inputs["core"])
        ctx.progress(5, f"reading tile {inputs['index'] + 1}")
        points = read_tile(open_scan([str(f) for f in scan.files], crs=scan.crs), core, params.buffer)
        ctx.progress(30, f"processing tile {inputs['index'] + 1} ({len(points):,} points)")
        result = process_tile(points, core, params, set(ALL_PRODUCTS))
        name = f"tile-{inputs['index']:05d}.npz"
        ctx.share_part(save_tile_result(result, ctx.workdir / name), name)
        ctx.progress(99, f"tile {inputs['index'] + 1} done")
        return Outcome(outputs={"part": name, "points": len(points)})
