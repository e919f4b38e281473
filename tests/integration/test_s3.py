"""The same system on S3-compatible object storage: moto's server on loopback stands in
for S3 and is spoken to over HTTP by the real clients (boto3 in the server and workers,
GDAL's /vsis3/ for tiles and in these tests, GDAL's /vsicurl/ on the COG download).
Each worker has its own local cache, as if on its own machine: whatever one process
hands another has to go through the bucket."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
import requests

from processes.lidar.pipeline import ALL_PRODUCTS, Params, run
from processes.lidar.synthetic import make_forest, write_las
from tests.conftest import PASSWORD, Workers, running_server
from tests.integration.test_jobs import _wait
from tests.integration.test_uploads import _create, _patch

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET, PREFIX = "canopy-test", "site-a"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
TILE = 100.0


class _Requests(logging.Handler):
    """Every request line moto's server logs (its werkzeug access log)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def s3():
    """moto in server mode on loopback, with an empty bucket; yields its endpoint."""
    logger = logging.getLogger("werkzeug")
    seen = _Requests()
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield {"endpoint": endpoint, "client": client, "requests": seen}
    finally:
        logger.removeHandler(seen)
        srv.stop()


def _env(s3) -> dict[str, str]:
    return {"CANOPY_STORAGE_URL": f"s3://{BUCKET}/{PREFIX}", "CANOPY_S3_ENDPOINT": s3["endpoint"], **AWS}


def _gdal_env(s3) -> dict[str, str]:
    """What GDAL needs to read the bucket through /vsis3/ (as environment variables)."""
    return {"AWS_S3_ENDPOINT": s3["endpoint"].split("://", 1)[1], "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE", **AWS}


def _vsis3(s3) -> rasterio.Env:
    """The same for rasterio, whose AWS credentials go through a session."""
    from rasterio.session import AWSSession
    session = AWSSession(aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"], region_name=AWS["AWS_REGION"],
                         aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
                         endpoint_url=s3["endpoint"].split("://", 1)[1])
    return rasterio.Env(session=session, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE")


@pytest.fixture(scope="module")
def s3_server(services, s3, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("s3run")
    with running_server(services, run_dir, **_env(s3)) as base:
        yield base


@pytest.fixture()
def s3_workers(services, s3, s3_server):
    """Workers for the S3 server, each with its own cache and workspace (its own "machine")."""
    run_dir = Path(s3_server.log).parent
    w = Workers(services, run_dir)
    count = iter(range(100))

    def start(**env: str):
        machine = run_dir / f"machine-{next(count)}"
        return w.start(1, **_env(s3), CANOPY_STORAGE_CACHE=str(machine / "cache"),
                       CANOPY_WORK_DIR=str(machine / "work"), **env)

    yield start
    w.stop_all()


@pytest.fixture(scope="module")
def public_project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name, visibility) VALUES ('s3 forest', 'public') "
                            "RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def owner(db_url, s3_server, public_project):
    """An owner of the project, with a token from the S3 server (tokens name their issuer)."""
    from argon2 import PasswordHasher
    with psycopg.connect(db_url, autocommit=True) as conn:
        uid = conn.execute("INSERT INTO users (username, password_hash, role) VALUES (%s, %s, 'analyst') "
                           "RETURNING id", (f"s3owner{os.getpid()}", PasswordHasher().hash(PASSWORD))).fetchone()[0]
        conn.execute("INSERT INTO project_members (project_id, user_id, role) VALUES (%s, %s, 'owner')",
                     (public_project, uid))
    r = requests.post(f"{s3_server}/auth/token", json={"username": f"s3owner{os.getpid()}", "password": PASSWORD},
                      headers={"X-Forwarded-For": "10.9.0.1"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _object_key(key: str) -> str:
    return f"{PREFIX}/{key}"


def _put_scan(s3, db_url, project: int, name: str, files: list[tuple[str, Path]]) -> int:
    """A scan whose files were put in the bucket with boto3 at their scan_files keys."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        scan_id = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, %s, 'uploaded') "
                               "RETURNING id", (project, name)).fetchone()[0]
        for fname, path in files:
            key = f"scans/{scan_id}/{fname}"
            s3["client"].upload_file(str(path), BUCKET, _object_key(key))
            conn.execute("INSERT INTO scan_files (scan_id, storage_uri, filename) VALUES (%s, %s, %s)",
                         (scan_id, key, fname))
    return scan_id


def _run(server, headers, process: str, inputs: dict, timeout: float = 600) -> dict:
    r = requests.post(f"{server}/processes/{process}/execution", json={"inputs": inputs},
                      headers={"Prefer": "respond-async", **headers})
    assert r.status_code == 201, r.text
    return _wait(server, headers, r.json()["jobID"], timeout=timeout)


def _sha256_of_object(s3, key: str) -> str:
    return hashlib.sha256(s3["client"].get_object(Bucket=BUCKET, Key=_object_key(key))["Body"].read()).hexdigest()


def _checksum(source: str, env: dict) -> int:
    out = subprocess.run(["gdalinfo", "-checksum", source], env={"PATH": "/usr/bin:/bin", **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("Checksum=")[1].split()[0])


def test_readyz_checks_the_bucket(s3_server):
    r = requests.get(f"{s3_server}/readyz")
    assert r.status_code == 200 and r.json()["checks"]["storage"] == "ok", r.text


def test_ingest_then_inventory_on_s3(s3, s3_server, s3_workers, db_url, public_project, owner, tmp_path):
    points, truth = make_forest("open", size=120, seed=3)
    laz = write_las(tmp_path / "forest.laz", points, crs="EPSG:32610")
    scan_id = _put_scan(s3, db_url, public_project, "forest on s3", [("forest.laz", laz)])
    s3_workers()

    job = _run(s3_server, owner, "ingest-scan", {"scan": scan_id})
    assert job["status"] == "successful", job
    props = requests.get(f"{s3_server}/collections/scans/items/{scan_id}", headers=owner).json()["properties"]
    assert props["status"] == "ready" and props["point_count"] == len(points) and props["crs_epsg"] == 32610

    job = _run(s3_server, owner, "forest-inventory", {"scan": scan_id, "resolution": 0.5})
    assert job["status"] == "successful", job
    results = requests.get(f"{s3_server}/jobs/{job['jobID']}/results", headers=owner).json()
    n_true = len(truth.trees["x"]) if isinstance(truth.trees, dict) else len(truth.trees)
    assert abs(results["summary"]["tree_count"] - n_true) <= 0.1 * n_true
    trees = requests.get(results["trees"]["href"], params={"limit": 10000}, headers=owner).json()
    assert trees["numberMatched"] == results["summary"]["tree_count"]

    with psycopg.connect(db_url) as conn:
        rasters = {kind: (rid, key) for rid, kind, key in conn.execute(
            "SELECT id, kind, storage_uri FROM rasters WHERE scan_id = %s", (scan_id,)).fetchall()}
    assert set(rasters) == {"dtm", "chm", "metrics"}
    run_dir = Path(s3_server.log).parent
    for _, key in rasters.values():          # in the bucket, and nowhere on the local disk
        s3["client"].head_object(Bucket=BUCKET, Key=_object_key(key))
        assert not list(run_dir.rglob(Path(key).name))
    assert not list(run_dir.rglob(job["jobID"] + "*"))           # work directories removed

    chm_id, chm_key = rasters["chm"]
    # GDAL reads the COG straight from the bucket (/vsis3/), with gdalinfo and with rasterio
    vsis3 = f"/vsis3/{BUCKET}/{_object_key(chm_key)}"
    info = subprocess.run(["gdalinfo", "-json", vsis3], env={**os.environ, **_gdal_env(s3)},
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    with _vsis3(s3), rasterio.open(vsis3) as ds:
        from_bucket = ds.read(1, masked=True)
        assert ds.crs.to_epsg() == 32610
        assert 0 <= from_bucket.min() and abs(float(from_bucket.max()) - float(np.max(truth.trees["height"]))) < 1.5

    # ... and through the server's COG download, by HTTP Range (/vsicurl/), as a desktop client
    # does: gdalinfo in a clean environment (this process holds the server's GDAL defaults once a
    # test has built the app in-process: CPL_VSIL_CURL_ALLOWED_EXTENSIONS=.tif refuses ".../cog")
    cog = f"{s3_server}/rasters/{chm_id}/cog"
    assert _checksum(f"/vsicurl/{cog}", {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                                         "CPL_VSIL_CURL_USE_HEAD": "NO"}) == _checksum(vsis3, _gdal_env(s3))
    whole = requests.get(cog)
    assert whole.status_code == 200 and whole.headers["Accept-Ranges"] == "bytes"
    assert hashlib.sha256(whole.content).hexdigest() == _sha256_of_object(s3, chm_key)
    etag = whole.headers["ETag"]
    part = requests.get(cog, headers={"Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == whole.content[100:1124]
    assert part.headers["Content-Range"] == f"bytes 100-1123/{len(whole.content)}"
    assert part.headers["ETag"] == etag
    assert requests.get(cog, headers={"If-None-Match": etag}).status_code == 304
    assert requests.get(cog, headers={"Range": f"bytes={len(whole.content) + 10}-"}).status_code == 416
    head = requests.head(cog)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(whole.content)

    # tiles are rendered by rio-tiler reading the bucket through /vsis3/
    tile = requests.get(f"{s3_server}/rasters/{chm_id}/tiles/WebMercatorQuad/"
                        f"{_center_tile(s3_server, chm_id)}.png")
    assert tile.status_code == 200 and tile.content[:4] == b"\x89PNG", tile.text[:300]
    assert requests.get(f"{s3_server}/rasters/999999999/cog").status_code == 404


def _center_tile(server: str, raster_id: int) -> str:
    import morecantile
    tj = requests.get(f"{server}/rasters/{raster_id}/tilejson.json").json()
    west, south, east, north = tj["bounds"]
    zoom = tj["maxzoom"]
    t = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, zoom)
    return f"{t.z}/{t.y}/{t.x}"


def test_tus_upload_completes_into_the_bucket(s3, s3_server, s3_workers, db_url, public_project, owner, tmp_path):
    points, _ = make_forest("open", size=60, seed=11)
    body = write_las(tmp_path / "plot.laz", points, crs="EPSG:32610").read_bytes()
    s3_workers()
    r = _create(s3_server, owner, len(body), {"filename": "plot.laz", "project": public_project,
                                              "name": "uploaded to s3"})
    assert r.status_code == 201, r.text
    url = r.headers["Location"]
    half = len(body) // 2
    assert _patch(url, owner, body[:half], 0).status_code == 204
    done = _patch(url, owner, body[half:], half)
    assert done.status_code == 204, done.text
    scan_id = int(done.headers["Canopy-Scan"].rsplit("/", 1)[1])
    with psycopg.connect(db_url) as conn:
        key, digest = conn.execute("SELECT storage_uri, sha256 FROM scan_files WHERE scan_id = %s",
                                   (scan_id,)).fetchone()
    assert key.startswith(f"scans/{scan_id}/")
    assert _sha256_of_object(s3, key) == digest == hashlib.sha256(body).hexdigest()
    run_dir = Path(s3_server.log).parent
    assert not list(run_dir.rglob(f"{url.rsplit('/', 1)[1]}.part"))          # the spooled bytes are gone
    job = _wait(s3_server, owner, done.headers["Canopy-Job"].rsplit("/", 1)[1], timeout=120)
    assert job["status"] == "successful", job                               # ingested from the bucket
    # a file that is not a point cloud is still refused, and nothing reaches the bucket
    junk = b"not a las file" * 100
    r = _create(s3_server, owner, len(junk), {"filename": "junk.laz", "project": public_project, "name": "junk"})
    bad = _patch(r.headers["Location"], owner, junk, 0)
    assert bad.status_code == 422, bad.text
    listed = s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/scans/").get("Contents", [])
    assert not [o for o in listed if o["Key"].endswith("junk.laz")]


def test_fan_out_parts_go_through_the_bucket(s3, s3_server, s3_workers, db_url, public_project, owner,
                                             tmp_path):
    points, _ = make_forest("open", size=200, seed=9)
    x0, y0 = points.x.min(), points.y.min()
    files = []
    for i, (dx, dy) in enumerate(((0, 0), (100, 0), (0, 100), (100, 100))):
        keep = (points.x >= x0 + dx) & (points.x < x0 + dx + 100) & (points.y >= y0 + dy) & \
               (points.y < y0 + dy + 100)
        files.append((f"q{i}.laz", write_las(tmp_path / f"q{i}.laz", points.subset(keep), crs="EPSG:32610")))
    scan_id = _put_scan(s3, db_url, public_project, "big on s3", files)
    single = run([str(p) for _, p in files], tmp_path / "single", params=Params(tile_size=TILE),
                 products=ALL_PRODUCTS)
    fanout = {"CANOPY_FANOUT_POINTS": "1000", "CANOPY_JOB_STALE": "3", "CANOPY_REAP_EVERY": "1"}
    s3_workers(**fanout)
    s3_workers(**fanout)
    assert _run(s3_server, owner, "ingest-scan", {"scan": scan_id})["status"] == "successful"
    job = _run(s3_server, owner, "forest-inventory", {"scan": scan_id, "tile_size": TILE})
    assert job["status"] == "successful", job
    job_id = job["jobID"]
    results = requests.get(f"{s3_server}/jobs/{job_id}/results", headers=owner).json()
    with psycopg.connect(db_url) as conn:
        tiles = conn.execute("SELECT status FROM jobs WHERE parent_id = %s", (job_id,)).fetchall()
        chm_key = conn.execute("SELECT storage_uri FROM rasters WHERE scan_id = %s AND kind = 'chm'",
                               (scan_id,)).fetchone()[0]
    assert len(tiles) >= 4 and tiles == [("successful",)] * results["summary"]["tiles"]
    # every tile's part was put in the bucket and read back by the parent, then deleted
    parts = f"/{BUCKET}/{PREFIX}/tmp/fanout/{job_id}/tile-"
    puts = {line for line in s3["requests"].lines if f"PUT {parts}" in line}
    gets = {line for line in s3["requests"].lines if f"GET {parts}" in line}
    assert len(puts) >= len(tiles) and len(gets) >= len(tiles), (puts, gets)
    deadline = time.monotonic() + 20        # the parent deletes them right after its commit
    while (left := s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/tmp/fanout/{job_id}/")
           .get("KeyCount", 0)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == 0
    # the merged result is the single-machine one
    with _vsis3(s3), rasterio.open(f"/vsis3/{BUCKET}/{_object_key(chm_key)}") as fanned, \
            rasterio.open(single["products"]["chm"]) as alone:
        assert fanned.transform == alone.transform and fanned.shape == alone.shape
        a, b = fanned.read(1), alone.read(1)
        both = np.isfinite(a) & np.isfinite(b)
        assert (np.isnan(a) == np.isnan(b)).all() and np.abs(a[both] - b[both]).max() <= 1e-6
    features = json.loads(Path(single["products"]["trees"]).read_text())["features"]
    assert results["summary"]["tree_count"] == len(features)


def test_worker_cache_evicts_least_recently_used_copies(s3, tmp_path, monkeypatch):
    """Fetched scans stay cached up to CANOPY_S3_CACHE_BYTES; older copies go first, copies in
    use (fetched within CACHE_MIN_AGE) never."""
    from server.storage import S3Storage

    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    store = S3Storage(BUCKET, "cache-test", tmp_path, s3["endpoint"], cache_bytes=2500)
    for name in ("a", "b", "c"):
        s3["client"].put_object(Bucket=BUCKET, Key=f"cache-test/scans/{name}.laz", Body=bytes(1000))
    a = store.fetch("scans/a.laz")
    b = store.fetch("scans/b.laz")
    old = time.time() - 2 * S3Storage.CACHE_MIN_AGE
    os.utime(a.with_name("a.laz.etag"), (old, old))
    os.utime(b.with_name("b.laz.etag"), (old + 1, old + 1))
    c = store.fetch("scans/c.laz")                 # 3000 bytes > 2500: the oldest (a) goes
    assert not a.exists() and b.exists() and c.exists()
    store.fetch("scans/a.laz")                     # fetched again; now b is the oldest and old enough
    assert b.exists() is False and a.exists() and c.exists()
    store.cache_bytes = 0
    assert store.evict() == 0 and a.exists() and c.exists()   # both in use: kept
