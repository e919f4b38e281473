"""Features throughput and latency: Canopy vs raw SQL vs stock pygeoapi, in one run.

Loads 200,000 plots into a private PostGIS, then measures three requests —
the first page (limit=100), a page 100,000 features deep, and a 1 % bbox — made
three ways on the same table:
  raw SQL    the same queries run in-process with psycopg + json encoding (the floor)
  canopy     Canopy under gunicorn (2 workers)
  pygeoapi   stock pygeoapi 0.21 with its PostgreSQL provider, gunicorn (2 workers)
Each row prints requests/s and p50/p99 latency at a fixed concurrency. It also prints
EXPLAIN for Canopy's queries. Figures only: nothing passes or fails on time.

    .venv/bin/python bench/features.py [--plots 200000] [--seconds 10] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import canopy, private_stack, status_of, wait_until_up  # noqa: E402
from server.devservices import free_port  # noqa: E402

BBOX = (-122.55, 49.45, -122.45, 49.55)      # 1 % of the 1° x 1° area the plots cover


def load_plots(url: str, n: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE plots, projects CASCADE")
        pid = conn.execute("INSERT INTO projects (name, visibility) VALUES ('bench', 'public') "
                           "RETURNING id").fetchone()[0]
        conn.execute("SELECT setseed(0.42)")
        conn.execute("""INSERT INTO plots (project_id, name, geom, attributes)
                        SELECT %s, 'plot ' || i,
                               ST_Multi(ST_Expand(ST_SetSRID(ST_MakePoint(-123 + random(), 49 + random()), 4326),
                                                  0.0001)),
                               jsonb_build_object('stand', (ARRAY['fir','hemlock','cedar'])[1 + i %% 3],
                                                  'age', i %% 120)
                        FROM generate_series(1, %s) AS i""", (pid, n))
        conn.execute("VACUUM ANALYZE plots")
        conn.execute("ANALYZE projects")
        return pid


def _cursor_at(url: str, offset: int) -> str:
    with psycopg.connect(url) as conn:
        key = conn.execute("SELECT id FROM plots ORDER BY id OFFSET %s LIMIT 1", (offset - 1,)).fetchone()[0]
    token = json.dumps({"dir": "next", "key": [key], "offset": offset}, separators=(",", ":"))
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


# -- load generation: one process per concurrent client, keep-alive connections ---------------

def _client(base: str, paths: list[str], seconds: float, out: mp.Queue) -> None:
    parsed = urlparse(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    latencies, errors, i = [], 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        path = paths[i % len(paths)]
        i += 1
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        latencies.append(time.perf_counter() - t0)
        if resp.status != 200:
            errors += 1
    out.put((latencies, errors))


def _summarise(latencies: list[float], seconds: float, errors: int) -> dict:
    latencies.sort()
    n = len(latencies)
    return {"rps": n / seconds, "p50": latencies[n // 2] * 1000, "p99": latencies[int(n * 0.99)] * 1000,
            "n": n, "errors": errors}


def measure_http(base: str, paths: list[str], seconds: float, concurrency: int) -> dict:
    for path in paths[:3]:                       # warm up each worker's connection and caches
        status_of(base, path)
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(base, paths, seconds, queue)) for _ in range(concurrency)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return _summarise([l for r in results for l in r[0]], seconds, sum(r[1] for r in results))


# -- the raw SQL floor ---------------------------------------------------------------------------

RAW_FEATURE = ("json_build_object('type','Feature','id',id,'geometry',ST_AsGeoJSON(geom,7)::json,"
               "'properties',json_build_object('project_id',project_id,'name',name,'attributes',attributes,"
               "'metrics',metrics,'version',version,'created_at',created_at,'updated_at',updated_at))::text")
RAW_QUERIES = {
    "first page": f"SELECT {RAW_FEATURE} FROM plots ORDER BY id LIMIT 101",
    "deep page": f"SELECT {RAW_FEATURE} FROM plots WHERE id > %(key)s ORDER BY id LIMIT 101",
    "1% bbox": f"SELECT {RAW_FEATURE} FROM plots WHERE geom && ST_MakeEnvelope(%(x0)s,%(y0)s,%(x1)s,%(y1)s,4326) "
               "ORDER BY id LIMIT 101",
}


def _raw_worker(url: str, sql: str, params: dict, seconds: float, out: mp.Queue) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        latencies = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            rows = conn.execute(sql, params).fetchall()
            body = json.dumps({"type": "FeatureCollection",
                               "features": [json.loads(r[0]) for r in rows[:100]]})
            latencies.append(time.perf_counter() - t0)
            assert body
    out.put((latencies, 0))


def measure_raw(url: str, sql: str, params: dict, seconds: float, concurrency: int) -> dict:
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_raw_worker, args=(url, sql, params, seconds, queue)) for _ in range(concurrency)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return _summarise([l for r in results for l in r[0]], seconds, 0)


# -- servers -----------------------------------------------------------------------------------

def start_stock_pygeoapi(db_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    """pygeoapi 0.21 as shipped: its PostgreSQL provider on the same plots table."""
    from pygeoapi.openapi import get_oas

    u = urlparse(db_url)
    port = free_port()
    config = {
        "server": {"bind": {"host": "127.0.0.1", "port": port}, "url": f"http://127.0.0.1:{port}",
                   "mimetype": "application/json; charset=UTF-8", "encoding": "utf-8",
                   "languages": ["en-US"], "pretty_print": False,
                   "limits": {"default_items": 100, "max_items": 10000},
                   "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "attribution": "OSM"}},
        "logging": {"level": "ERROR"},
        "metadata": {"identification": {"title": "stock", "description": "stock", "keywords": ["x"],
                                        "keywords_type": "theme", "terms_of_service": "x", "url": "x"},
                     "license": {"name": "x", "url": "x"}, "provider": {"name": "x", "url": "x"},
                     "contact": {"name": "x", "position": "x", "address": "x", "city": "x",
                                 "stateorprovince": "x", "postalcode": "x", "country": "x",
                                 "email": "x@example.org", "url": "x", "role": "pointOfContact"}},
        "resources": {"plots": {
            "type": "collection", "title": "plots", "description": "plots", "keywords": ["plots"],
            "extents": {"spatial": {"bbox": [-180, -90, 180, 90],
                                    "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
            "providers": [{"type": "feature", "name": "PostgreSQL", "data": {
                "host": u.hostname, "port": u.port, "dbname": u.path.lstrip("/"), "user": u.username or "postgres",
                "password": u.password or "", "search_path": ["public"]},
                "id_field": "id", "table": "plots", "geom_field": "geom"}]}},
    }
    cfg_path = workdir / "stock-config.yml"
    cfg_path.write_text(yaml.safe_dump(config))
    oas_path = workdir / "stock-openapi.yml"
    oas_path.write_text(yaml.safe_dump(json.loads(json.dumps(get_oas(config), default=str))))
    env = dict(os.environ, PYGEOAPI_CONFIG=str(cfg_path), PYGEOAPI_OPENAPI=str(oas_path))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                             "pygeoapi.flask_app:APP"], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base, "/collections/plots/items?limit=1", proc)
    return proc, base


def explain(url: str, cursor_key: int) -> None:
    """EXPLAIN of the queries Canopy runs for the three requests (as its provider builds them)."""
    from psycopg import sql as psql
    vis = "project_id IN (SELECT id FROM projects WHERE visibility = 'public')"
    queries = {
        "first page": f"SELECT id FROM plots WHERE {vis} ORDER BY id LIMIT 101",
        "deep page": f"SELECT id FROM plots WHERE {vis} AND ((id > {cursor_key})) ORDER BY id LIMIT 101",
        "1% bbox": f"SELECT id FROM plots WHERE {vis} AND geom && ST_MakeEnvelope{BBOX[:2] + BBOX[2:]}::geometry "
                   "ORDER BY id LIMIT 101".replace("::geometry", ""),
        "1% bbox count": f"SELECT count(*) FROM (SELECT 1 FROM plots WHERE {vis} AND geom && "
                         f"ST_SetSRID(ST_MakeEnvelope{BBOX}, 4326) LIMIT 10001) t",
    }
    queries["1% bbox"] = (f"SELECT id FROM plots WHERE {vis} AND geom && ST_SetSRID(ST_MakeEnvelope{BBOX}, 4326) "
                          "ORDER BY id LIMIT 101")
    with psycopg.connect(url) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        for name, q in queries.items():
            plan = conn.execute(psql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) " + q)).fetchone()[0][0]
            nodes, stack = [], [plan["Plan"]]
            while stack:
                node = stack.pop()
                nodes.append(node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else ""))
                stack.extend(node.get("Plans", []))
            print(f"  EXPLAIN {name:14s} {plan['Execution Time']:7.2f} ms  {' > '.join(nodes)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plots", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,4", help="comma-separated client counts")
    parser.add_argument("--skip-stock", action="store_true")
    args = parser.parse_args()

    with private_stack("bench-features-") as stack, contextlib.ExitStack() as servers:
        db_url, workdir = stack.db, stack.work
        t0 = time.perf_counter()
        load_plots(db_url, args.plots)
        print(f"loaded {args.plots:,} plots in {time.perf_counter() - t0:.1f} s")
        deep = min(100_000, args.plots // 2)
        cursor = _cursor_at(db_url, deep)
        with psycopg.connect(db_url) as conn:
            deep_key = conn.execute("SELECT id FROM plots ORDER BY id OFFSET %s LIMIT 1", (deep - 1,)).fetchone()[0]
        bbox = ",".join(str(v) for v in BBOX)
        canopy_paths = {"first page": "/collections/plots/items?limit=100",
                        "deep page": f"/collections/plots/items?limit=100&cursor={cursor}",
                        "1% bbox": f"/collections/plots/items?limit=100&bbox={bbox}"}
        stock_paths = {"first page": "/collections/plots/items?limit=100",
                       "deep page": f"/collections/plots/items?limit=100&offset={deep}",
                       "1% bbox": f"/collections/plots/items?limit=100&bbox={bbox}"}
        raw_params = {"key": deep_key, "x0": BBOX[0], "y0": BBOX[1], "x1": BBOX[2], "y1": BBOX[3]}
        _, canopy_base = servers.enter_context(canopy(stack))
        stock_base = None
        if not args.skip_stock:
            stock_proc, stock_base = start_stock_pygeoapi(db_url, workdir)
            servers.callback(lambda: (stock_proc.send_signal(signal.SIGTERM), stock_proc.wait(30)))
        print(f"\n{args.seconds:g} s per cell, 2 gunicorn workers per server, {os.cpu_count()} cores; "
              "the load generator runs on the same cores\n")
        header = (f"{'conc':>4s} {'request':12s} {'server':10s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
                  f"{'vs stock':>9s}")
        print(header)
        print("-" * len(header))
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for name in canopy_paths:
                raw = measure_raw(db_url, RAW_QUERIES[name], raw_params, args.seconds, concurrency)
                can = measure_http(canopy_base, [canopy_paths[name]], args.seconds, concurrency)
                stock = (measure_http(stock_base, [stock_paths[name]], args.seconds, concurrency)
                         if stock_base else None)
                for label, r in (("raw SQL", raw), ("canopy", can), ("pygeoapi", stock)):
                    if r is None:
                        continue
                    ratio = f"{r['rps'] / stock['rps']:8.1f}x" if stock else ""
                    err = f"  ({r['errors']} errors)" if r["errors"] else ""
                    print(f"{concurrency:4d} {name:12s} {label:10s} {r['rps']:8.1f} {r['p50']:8.1f} "
                          f"{r['p99']:8.1f} {ratio}{err}")
        print()
        explain(db_url, deep_key)


if __name__ == "__main__":
    main()
