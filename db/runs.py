"""Which run's rows a list shows: the one rule the Features provider and the vector
tiles share (like db.access's visibility rule).

Every job that makes products is a run (table `runs`, migration 0006); rasters, trees
and crowns carry its `run_id`. By default a list shows, for each scan and product, the
rows of the latest run that made that product (view `current_products`): re-running the
tree detection shows the new trees beside the terrain model of an earlier inventory.
`run=<job id>` selects one run, `run=all` every run. Rows without a run (loaded by hand,
e.g. a raster registered by an administrator) are always shown.
"""

from __future__ import annotations

import re

from psycopg import sql

ALL = "all"
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# collection -> the product of `current_products` its rows belong to (rasters: their kind)
PRODUCT = {"trees": "trees", "crowns": "trees"}
RUN_TABLES = ("trees", "crowns", "rasters")


def run_rows(table: str, run: str | None) -> sql.Composable:
    """Condition on `table`'s rows for `run` (None: the current runs, see the module docstring)."""
    if table not in RUN_TABLES:
        return sql.SQL("TRUE")
    if run == ALL:
        return sql.SQL("TRUE")
    if run is not None:
        return sql.SQL("run_id = {}").format(sql.Literal(run))
    if table == "rasters":
        return sql.SQL("(run_id IS NULL OR (kind, run_id) IN (SELECT product, run_id FROM current_products))")
    return sql.SQL("(run_id IS NULL OR run_id IN (SELECT run_id FROM current_products WHERE product = {}))").format(
        sql.Literal(PRODUCT[table]))
