"""The end-to-end check `make container-check` runs against a Canopy started in containers.

Run inside the Canopy image (it needs only what the image holds: requests and the LiDAR
simulator), with the host's network:

    python /check/container_smoke.py http://127.0.0.1:5000 admin PASSWORD

Waits for /readyz, signs in, makes a project, simulates a small LAZ and uploads it over
tus, waits for its `ingest-scan` job, runs `forest-inventory` to `successful` (on the
worker container), then fetches the CHM's TileJSON and one PNG tile. Prints one line per
step with its time; exits non-zero at the first failure.
"""

from __future__ import annotations

import base64
import math
import sys
import tempfile
import time
from pathlib import Path

import requests

T0 = time.monotonic()


def step(message: str) -> None:
    print(f"smoke [{time.monotonic() - T0:6.1f} s] {message}", flush=True)


def fail(message: str) -> None:
    step(f"FAILED: {message}")
    sys.exit(1)


def wait_ready(base: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200:
                return r.json()
            last = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as err:
            last = type(err).__name__
        time.sleep(2)
    fail(f"/readyz not ready after {timeout:.0f} s: {last}")


def wait_job(base: str, auth: dict, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    shown = None
    while time.monotonic() < deadline:
        job = requests.get(f"{base}/jobs/{job_id}", headers=auth, params={"f": "json"}, timeout=10).json()
        state = (job.get("status"), job.get("progress"))
        if state != shown:
            step(f"job {job_id} ({job.get('processID')}): {state[0]} {state[1]}%")
            shown = state
        if job.get("status") in ("successful", "failed", "dismissed"):
            return job
        time.sleep(2)
    fail(f"job {job_id} not finished after {timeout:.0f} s")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def simulated_laz(directory: Path) -> Path:
    from processes.lidar.synthetic import make_forest, write_las
    from server.demo import EPSG, origin
    points, _ = make_forest("open", size=80.0, seed=7, density=10.0, origin=origin())
    return write_las(directory / "smoke.laz", points, crs=f"EPSG:{EPSG}", version="1.4", point_format=6)


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def main(base: str, username: str, password: str) -> None:
    base = base.rstrip("/")
    checks = wait_ready(base)
    step(f"/readyz: {checks}")
    r = requests.get(f"{base}/healthz", timeout=5)
    step(f"/healthz: {r.status_code} {r.text.strip()}")

    r = requests.post(f"{base}/auth/token", json={"username": username, "password": password}, timeout=10)
    if r.status_code != 200:
        fail(f"sign-in as {username}: {r.status_code} {r.text[:300]}")
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    step(f"signed in as {username}")

    r = requests.post(f"{base}/projects", headers=auth, json={"name": "container check", "visibility": "private"},
                      timeout=10)
    if r.status_code not in (200, 201):
        fail(f"POST /projects: {r.status_code} {r.text[:300]}")
    project = str(r.json()["id"])
    step(f"project {project} created")

    with tempfile.TemporaryDirectory() as tmp:
        laz = simulated_laz(Path(tmp))
        data = laz.read_bytes()
        step(f"simulated {laz.name}: {len(data)} bytes")
        tus = {**auth, "Tus-Resumable": "1.0.0"}
        r = requests.post(f"{base}/uploads", headers={
            **tus, "Upload-Length": str(len(data)),
            "Upload-Metadata": f"filename {b64(laz.name)},project {b64(project)},name {b64('container check')}"},
            timeout=30)
        if r.status_code != 201:
            fail(f"tus creation: {r.status_code} {r.text[:300]}")
        location = r.headers["Location"]
        if location.startswith("/"):
            location = base + location
        r = requests.patch(location, data=data, timeout=120, headers={
            **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        if r.status_code != 204:
            fail(f"tus PATCH: {r.status_code} {r.text[:300]}")
        # Canopy-Scan and Canopy-Job carry the new scan's and job's URLs
        scan = r.headers.get("Canopy-Scan", "").rstrip("/").rsplit("/", 1)[-1]
        ingest = r.headers.get("Canopy-Job", "").rstrip("/").rsplit("/", 1)[-1]
        if not (scan and ingest):
            fail(f"the last PATCH names no scan or job: {dict(r.headers)}")
        step(f"uploaded over tus: scan {scan}, ingest job {ingest}")
    job = wait_job(base, auth, ingest, 300)
    if job["status"] != "successful":
        fail(f"ingest-scan ended {job['status']}: {job.get('message')}")

    r = requests.post(f"{base}/processes/forest-inventory/execution", timeout=30,
                      headers={**auth, "Prefer": "respond-async"}, json={"inputs": {"scan": int(scan)}})
    if r.status_code != 201:
        fail(f"forest-inventory execution: {r.status_code} {r.text[:300]}")
    job_id = r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    step(f"forest-inventory job {job_id} accepted")
    job = wait_job(base, auth, job_id, 900)
    if job["status"] != "successful":
        fail(f"forest-inventory ended {job['status']}: {job.get('message')}")

    r = requests.get(f"{base}/collections/rasters/items", headers=auth, timeout=30,
                     params={"scan_id": scan, "kind": "chm", "f": "json"})
    features = r.json().get("features", [])
    if not features:
        fail(f"no CHM raster for scan {scan}: {r.status_code} {r.text[:300]}")
    raster = features[0]["id"]
    tilejson = requests.get(f"{base}/rasters/{raster}/tilejson.json", headers=auth, timeout=30).json()
    lon, lat = tilejson["center"][0], tilejson["center"][1]
    z = min(int(tilejson.get("maxzoom", 18)), 18)
    x, y = tile_of(lon, lat, z)
    url = tilejson["tiles"][0].replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
    r = requests.get(url, headers=auth, timeout=30)
    if r.status_code != 200 or not r.content.startswith(b"\x89PNG"):
        fail(f"tile {url}: {r.status_code} {r.headers.get('Content-Type')} {r.content[:100]!r}")
    step(f"CHM raster {raster}: tile {z}/{x}/{y} is a {len(r.content)}-byte PNG")
    step("container check passed")


if __name__ == "__main__":
    main(*sys.argv[1:4])
