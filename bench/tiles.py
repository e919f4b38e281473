"""Raster tile throughput and latency: in-process rio-tiler vs TiTiler vs Canopy, one run.

One CHM COG (4000 x 4000 float32, 0.5 m, deflate, made here once under .data/bench-tiles)
is served three ways, each rendering the same list of WebMercatorQuad tiles (zooms 15-18
over the raster, shuffled) as PNG with `rescale=0,40` and the viridis colormap:

  floor    rio-tiler in this process, the way its docs show it: open the COG, `tile()`,
           `rescale`, `render(img_format="PNG", colormap=...)`, one tile after another
  titiler  TiTiler (PyPI, in its own venv under .data/titiler-venv, made on first run),
           gunicorn with N uvicorn workers; same GDAL settings as Canopy
  inproc   Canopy's tile code in this process (kept-open dataset, paletted PNG): Canopy
           minus HTTP, the database lookup and the policy
  canopy   Canopy's real app (`python -m server serve --workers N`), a private PostGIS and
           Redis started here, the raster a row of `rasters`; no tile cache

For each concurrency, TiTiler then Canopy, each freshly started; the list is then
requested twice: "cold" (first pass after start) and "warm" (second pass). Each client is
its own process with a keep-alive connection; a pass's tiles are split between the clients.
Prints tiles/s and p50/p99 latency. Figures only: nothing passes or fails on time.

    .venv/bin/python bench/tiles.py [--tiles 300] [--workers 2] [--concurrency 1,4]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import wait_until_up  # noqa: E402
from server.devservices import LocalPostgres, LocalRedis, free_port  # noqa: E402

BENCH_DIR = ROOT / ".data" / "bench-tiles"
TITILER_VENV = ROOT / ".data" / "titiler-venv"
RESCALE = (0.0, 40.0)
COLORMAP = "viridis"
GDAL_ENV = {"GDAL_CACHEMAX": "256", "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_NUM_THREADS": "1",
            "VSI_CACHE": "TRUE", "VSI_CACHE_SIZE": "16777216"}
EPSG, X0, Y0, RES, SIZE = 32610, 530000.0, 5460000.0, 0.5, 4000


# -- the data --------------------------------------------------------------------------------

def make_chm(path: Path) -> Path:
    """A 4000 x 4000 canopy height model: crowns of random trees on a patchy stand."""
    if path.exists():
        return path
    import rasterio
    from rasterio.transform import from_origin
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles
    from scipy import ndimage

    rng = np.random.default_rng(42)
    stand = ndimage.gaussian_filter(rng.random((SIZE // 8, SIZE // 8)), 6)
    stand = np.kron((stand - stand.min()) / np.ptp(stand), np.ones((8, 8)))
    tops = np.zeros((SIZE, SIZE), np.float32)
    n = 60_000
    rows, cols = rng.integers(0, SIZE, n), rng.integers(0, SIZE, n)
    tops[rows, cols] = (8 + 30 * stand[rows, cols] + rng.normal(0, 3, n)).clip(2, 45)
    crowns = ndimage.grey_dilation(tops, footprint=np.hypot(*np.mgrid[-5:6, -5:6]) <= 5)
    chm = ndimage.gaussian_filter(crowns, 1.5).astype(np.float32)
    chm[(stand < 0.12)] = 0.0                       # gaps
    chm[:300, :300] = -9999.0                        # no data
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="float32", crs=f"EPSG:{EPSG}",
                   transform=from_origin(X0, Y0, RES, RES), nodata=-9999.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(chm, 1)
        with mem.open() as src:
            cog_translate(src, str(path), cog_profiles.get("deflate"), quiet=True,
                          overview_resampling="average")
    return path


def tile_list(path: Path, count: int) -> list[tuple[int, int, int]]:
    """(z, x, y) of `count` tiles over the raster at zooms 15-18, shuffled with a fixed seed."""
    import morecantile
    from rio_tiler.io import Reader

    tms = morecantile.tms.get("WebMercatorQuad")
    with Reader(str(path)) as src:
        bounds = src.get_geographic_bounds("EPSG:4326")
        tiles = [(t.z, t.x, t.y) for t in tms.tiles(*bounds, zooms=[15, 16, 17, 18])
                 if src.tile_exists(t.x, t.y, t.z)]
    random.Random(7).shuffle(tiles)
    return tiles[:count]


# -- measuring ---------------------------------------------------------------------------------

def _summary(latencies: list[float], wall: float, errors: int) -> dict:
    ordered = sorted(latencies)
    n = len(ordered)
    return {"tps": n / wall, "p50": ordered[n // 2] * 1000, "p99": ordered[min(n - 1, int(n * 0.99))] * 1000,
            "n": n, "errors": errors}


def _floor_pass(path: str, tiles: list, out: mp.Queue) -> None:
    for key, value in GDAL_ENV.items():
        os.environ.setdefault(key, value)
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader

    colormap = cmap.get(COLORMAP)
    results = []
    for _ in range(2):                      # cold, warm
        latencies = []
        start = time.perf_counter()
        for z, x, y in tiles:
            t0 = time.perf_counter()
            with Reader(path) as src:
                image = src.tile(x, y, z)
            image.rescale(in_range=(RESCALE,))
            body = image.render(img_format="PNG", colormap=colormap)
            latencies.append(time.perf_counter() - t0)
            assert body
        results.append(_summary(latencies, time.perf_counter() - start, 0))
    out.put(results)


def _inproc_pass(path: str, tiles: list, out: mp.Queue) -> None:
    """Canopy's own tile code (kept-open dataset, paletted PNG) in-process: Canopy minus HTTP,
    routing, the database lookup and the policy."""
    from server.tiles import datasets, render, tiler
    from server.tiles.tms import get_tms

    style = render.parse_style({"rescale": f"{RESCALE[0]},{RESCALE[1]}", "colormap": COLORMAP}, "chm")
    tms = get_tms("WebMercatorQuad")
    results = []
    for _ in range(2):                      # cold, warm
        latencies = []
        start = time.perf_counter()
        for z, x, y in tiles:
            t0 = time.perf_counter()
            with datasets.dataset(Path(path), "bench", tms) as entry:
                body = tiler.tile(entry, "chm", z, y, x, style, "png")
            latencies.append(time.perf_counter() - t0)
            assert body
        results.append(_summary(latencies, time.perf_counter() - start, 0))
    out.put(results)


def measure_floor(path: Path, tiles: list, target=_floor_pass) -> list[dict]:
    """In a fresh process (so 'cold' is cold), one tile after another."""
    queue: mp.Queue = mp.Queue()
    proc = mp.Process(target=target, args=(str(path), tiles, queue))
    proc.start()
    results = queue.get()
    proc.join()
    return results


def _client(base: str, paths: list[str], barrier, out: mp.Queue) -> None:
    parsed = urlparse(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    latencies, errors = [], 0
    barrier.wait()
    for path in paths:
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        latencies.append(time.perf_counter() - t0)
        if resp.status != 200 or not body.startswith(b"\x89PNG"):
            errors += 1
    out.put((latencies, errors))


def measure_http(base: str, paths: list[str], concurrency: int) -> dict:
    queue: mp.Queue = mp.Queue()
    barrier = mp.Barrier(concurrency + 1)
    procs = [mp.Process(target=_client, args=(base, paths[i::concurrency], barrier, queue))
             for i in range(concurrency)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    results = [queue.get() for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    return _summary([t for r in results for t in r[0]], wall, sum(r[1] for r in results))


SAMPLE = 20


def _decode(body: bytes) -> np.ndarray:
    import io
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA")).astype(int)


def _floor_images(path: Path, tiles: list) -> list[np.ndarray]:
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader
    out = []
    with Reader(str(path)) as src:
        for z, x, y in tiles:
            image = src.tile(x, y, z)
            image.rescale(in_range=(RESCALE,))
            out.append(_decode(image.render(img_format="PNG", colormap=cmap.get(COLORMAP))))
    return out


def _picture_difference(base: str, paths: list[str], expected: list[np.ndarray]) -> float:
    """Largest per-channel difference between a server's tiles and the floor's: the servers
    must draw the same picture for their speeds to compare."""
    parsed = urlparse(base)
    worst = 0.0
    for path, floor in zip(paths, expected):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        conn.request("GET", path)
        got = _decode(conn.getresponse().read())
        visible = floor[..., 3] > 0
        worst = max(worst, float(np.abs(got - floor)[visible].max()) if visible.any() else 0.0,
                    float(np.abs(got[..., 3] - floor[..., 3]).max()))
    return worst


# -- servers -------------------------------------------------------------------------------------

def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ensure_titiler() -> Path:
    python = TITILER_VENV / "bin" / "python"
    if not (TITILER_VENV / "bin" / "gunicorn").exists() or not (TITILER_VENV / "bin" / "uvicorn").exists():
        print("installing TiTiler into .data/titiler-venv (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(TITILER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "titiler.application", "uvicorn", "gunicorn"],
                       check=True, stderr=subprocess.DEVNULL)
    return TITILER_VENV / "bin" / "gunicorn"


def start_titiler(workers: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    """TiTiler under gunicorn with uvicorn workers. (`uvicorn --workers 2` was measured too:
    on keep-alive connections its replies wait ~40 ms more, a delayed-ACK artefact that
    would make TiTiler look slower than it is.)"""
    gunicorn = ensure_titiler()
    port = free_port()
    env = dict(os.environ, **GDAL_ENV)
    proc = subprocess.Popen([str(gunicorn), "-k", "uvicorn.workers.UvicornWorker", "--workers", str(workers),
                             "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                             "titiler.application.main:app"], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base, "/healthz", proc)
    return proc, base


def start_canopy(workers: int, db_url: str, redis_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, PORT=str(port), HOST="127.0.0.1",
               CANOPY_RUN_DIR=str(workdir / "canopy-run"), CANOPY_DATA_DIR=str(workdir),
               CANOPY_LOG_LEVEL="WARNING", CANOPY_JWT_SECRET=secrets.token_urlsafe(48), CANOPY_TILE_CACHE_TTL="0")
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--workers", str(workers)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base, "/healthz", proc)
    return proc, base


def register_raster(db_url: str, path: Path) -> int:
    import psycopg
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES ('bench tiles', 'public') "
                               "RETURNING id").fetchone()[0]
        return conn.execute("INSERT INTO rasters (project_id, kind, storage_uri, crs_epsg, resolution_m) "
                            "VALUES (%s, 'chm', %s, %s, %s) RETURNING id",
                            (project, path.as_uri(), EPSG, RES)).fetchone()[0]


# -- main ----------------------------------------------------------------------------------------

def _row(name: str, concurrency: int, phase: str, r: dict) -> str:
    errors = f"  errors {r['errors']}" if r["errors"] else ""
    return (f"| {name:8s} | {concurrency:>2} | {phase:4s} | {r['tps']:7.1f} | {r['p50']:7.1f} | "
            f"{r['p99']:7.1f} |{errors}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--skip-titiler", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    chm = make_chm(BENCH_DIR / "chm-4000.tif")
    tiles = tile_list(chm, args.tiles)
    zooms = {z: sum(1 for t in tiles if t[0] == z) for z in sorted({t[0] for t in tiles})}
    print(f"CHM COG {chm} ({chm.stat().st_size / 1e6:.1f} MB), {len(tiles)} tiles by zoom {zooms}, "
          f"PNG rescale={RESCALE[0]:g},{RESCALE[1]:g} colormap={COLORMAP}, {args.workers} server workers, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=BENCH_DIR))
    workdir.chmod(0o755)                   # PostgreSQL runs as its own user under it
    started = []
    rows = []
    try:
        floor = measure_floor(chm, tiles)
        rows += [_row("floor", 1, "cold", floor[0]), _row("floor", 1, "warm", floor[1])]
        print(rows[-2], rows[-1], sep="\n", flush=True)
        inproc = measure_floor(chm, tiles, _inproc_pass)
        rows += [_row("inproc", 1, "cold", inproc[0]), _row("inproc", 1, "warm", inproc[1])]
        print(rows[-2], rows[-1], sep="\n", flush=True)

        query = f"rescale={RESCALE[0]:g},{RESCALE[1]:g}"
        floor_images = _floor_images(chm, tiles[:SAMPLE])
        same_picture: dict[str, float] = {}
        pg = LocalPostgres(workdir / "postgres")
        db_url = pg.start()
        started.append(pg)
        rd = LocalRedis(workdir / "redis", persist=False)
        redis_url = rd.start()
        started.append(rd)
        from db.migrate import migrate
        migrate(db_url)
        raster = register_raster(db_url, chm)
        servers = {
            "canopy": (lambda: start_canopy(args.workers, db_url, redis_url, workdir),
                       [f"/rasters/{raster}/tiles/WebMercatorQuad/{z}/{y}/{x}.png?{query}&colormap={COLORMAP}"
                        for z, x, y in tiles]),
        }
        if not args.skip_titiler:
            servers["titiler"] = (lambda: start_titiler(args.workers, workdir),
                                  [f"/cog/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url={chm.as_uri()}&{query}"
                                   f"&colormap_name={COLORMAP}" for z, x, y in tiles])
        # TiTiler and Canopy back to back at each concurrency, so drifting load on a shared
        # machine weighs on both alike
        for c in levels:
            for name in ("titiler", "canopy"):
                if name not in servers:
                    continue
                start_server, paths = servers[name]
                proc, base = start_server()
                try:
                    for phase in ("cold", "warm"):
                        rows.append(_row(name, c, phase, measure_http(base, paths, c)))
                        print(rows[-1], flush=True)
                    if c == levels[0]:
                        same_picture[name] = _picture_difference(base, paths[:SAMPLE], floor_images)
                finally:
                    _stop(proc)
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (other work on the machine slows every row)")
    print("same picture: largest colour difference (0-255) from the floor's RGBA over "
          f"{SAMPLE} tiles: " + ", ".join(f"{k} {v:.0f}" for k, v in same_picture.items()))
    print("\n| server   |  c | pass | tiles/s | p50 ms  | p99 ms  |")
    print("|----------|----|------|---------|---------|---------|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
