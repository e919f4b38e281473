"""Fault injection: what is lost when workers are killed, PostgreSQL and Redis restart
and uploads are cut — N times each, on a private stack (PostgreSQL, Redis, Canopy under
gunicorn, a Huey worker pool), with real jobs and real LAZ files.

- kills: a fanned-out forest inventory (4 tiles) runs while its worker pool is SIGKILLed
  at a random moment (queued, mid-tile, mid-merge or mid-commit) and started again;
  lost = trees of the reference run missing from the run that finished, duplicated = extra.
- postgres / redis: 4 clients write plots and submit echo jobs for the whole trial
  while the service is stopped for --outage seconds and started again; lost = plots
  acknowledged with 201 that are not in the table, jobs acknowledged with 201 that
  never succeed. Every status code is counted: outages must be 503, never 500.
- uploads: a LAZ from ../shared/data (else a synthetic one) is sent with one PATCH cut
  at a random offset, resumed from the server's Upload-Offset, completed; lost bytes =
  the stored file's difference from the source (sha256 and size).

Figures only; nothing passes or fails on time. The reference run is the same inventory
with no fault, in the same run.

    .venv/bin/python bench/faults.py [--tries 5] [--outage 5]
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures as cf
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import add_user, canopy, private_stack, service_env  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TUS = {"Tus-Resumable": "1.0.0"}
FAST_REAP = {"CANOPY_FANOUT_POINTS": "1000", "CANOPY_JOB_STALE": "3", "CANOPY_REAP_EVERY": "1"}
SQUARE = {"type": "Polygon", "coordinates": [[[-123, 44], [-122.999, 44], [-122.999, 44.001], [-123, 44]]]}


class Workers:
    """The Huey worker pool, in a process group of its own so that a kill takes all of it."""

    def __init__(self, env: dict):
        self.env, self.proc = env, None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "server", "worker", "--workers", "2"], cwd=ROOT,
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_job(db: str, job_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    with psycopg.connect(db, autocommit=True) as conn:
        while time.monotonic() < deadline:
            status = conn.execute("SELECT status FROM jobs WHERE identifier = %s", (job_id,)).fetchone()[0]
            if status in ("successful", "failed", "dismissed"):
                return status
            time.sleep(0.3)
    return "timed out"


def make_scan(db: str, storage: Path, project: int) -> int:
    """A 200 m x 200 m synthetic forest in four LAZ files, stored as an uploaded scan:
    (scan id, one of its files)."""
    from processes.lidar.synthetic import make_forest, write_las
    points, _ = make_forest("open", size=200, seed=9)
    with psycopg.connect(db, autocommit=True) as conn:
        scan = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, 'faults', 'uploaded') "
                            "RETURNING id", (project,)).fetchone()[0]
        x0, y0 = points.x.min(), points.y.min()
        for i, (dx, dy) in enumerate(((0, 0), (100, 0), (0, 100), (100, 100))):
            keep = (points.x >= x0 + dx) & (points.x < x0 + dx + 100) & \
                   (points.y >= y0 + dy) & (points.y < y0 + dy + 100)
            key = f"scans/{scan}/q{i}.laz"
            (storage / key).parent.mkdir(parents=True, exist_ok=True)
            write_las(storage / key, points.subset(keep), crs="EPSG:32610")
            conn.execute("INSERT INTO scan_files (scan_id, storage_uri, filename, size_bytes) "
                         "VALUES (%s, %s, %s, %s)", (scan, key, key, (storage / key).stat().st_size))
    return scan, storage / key


def inventory(base: str, auth: dict, scan: int) -> str:
    r = requests.post(f"{base}/processes/forest-inventory/execution", timeout=30,
                      json={"inputs": {"scan": scan, "tile_size": 100}}, headers={"Prefer": "respond-async", **auth})
    r.raise_for_status()
    return r.json()["jobID"]


def trees_of(db: str, run: str) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM trees WHERE run_id = %s", (run,)).fetchone()[0]


def kills(args, base: str, db: str, auth: dict, scan: int, workers: Workers) -> dict:
    t = time.monotonic()
    ref = inventory(base, auth, scan)
    assert wait_job(db, ref) == "successful", "the reference run failed"
    clean_s, expected = time.monotonic() - t, trees_of(db, ref)
    out = collections.Counter()
    for _ in range(args.tries):
        job = inventory(base, auth, scan)
        time.sleep(random.uniform(0, clean_s))
        workers.kill()
        workers.start()
        status = wait_job(db, job)
        got = trees_of(db, job) if status == "successful" else 0
        out["tries"] += 1
        out["jobs lost"] += status != "successful"
        out["trees lost"] += max(0, expected - got)
        out["trees duplicated"] += max(0, got - expected)
    return {"reference": f"{expected} trees in {clean_s:.1f} s", **out}


def load(base: str, auth: dict, project: int, stop: threading.Event) -> tuple[collections.Counter, list, list]:
    """4 clients writing plots and submitting echo jobs until `stop`: (statuses, plot ids, job ids) acknowledged."""
    statuses, plots, jobs, lock = collections.Counter(), [], [], threading.Lock()

    def client(n: int) -> None:
        s = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 2:
                    r = s.post(f"{base}/collections/plots/items", timeout=30, headers={
                        "Content-Type": "application/geo+json", **auth}, json={
                        "type": "Feature", "geometry": SQUARE,
                        "properties": {"name": f"fault {n}-{i}", "project_id": project}})
                    new = plots if r.status_code == 201 else None
                    ident = r.headers.get("Location", "").rsplit("/", 1)[-1]
                else:
                    r = s.post(f"{base}/processes/echo/execution", timeout=30, headers={
                        "Prefer": "respond-async", **auth}, json={"inputs": {"message": f"{n}-{i}"}})
                    new = jobs if r.status_code == 201 else None
                    ident = r.json().get("jobID") if r.status_code == 201 else None
                with lock:
                    statuses[r.status_code] += 1
                    if new is not None:
                        new.append(ident)
            except requests.RequestException as exc:
                with lock:
                    statuses[type(exc).__name__] += 1
            time.sleep(0.02)

    with cf.ThreadPoolExecutor(4) as pool:
        for n in range(4):
            pool.submit(client, n)
        stop.wait()
    return statuses, plots, jobs


def outages(args, base: str, db: str, auth: dict, project: int, service) -> dict:
    statuses, lost_plots, lost_jobs, acked = collections.Counter(), 0, 0, 0
    recover = []
    for _ in range(args.tries):
        stop = threading.Event()
        with cf.ThreadPoolExecutor(1) as pool:
            running = pool.submit(load, base, auth, project, stop)
            time.sleep(1.5)
            service.stop()
            time.sleep(args.outage)
            service.start()
            t = time.monotonic()
            while requests.get(f"{base}/readyz", timeout=10).status_code != 200:
                time.sleep(0.1)
            recover.append(time.monotonic() - t)
            time.sleep(2)
            stop.set()
            seen, plots, jobs = running.result()
        statuses.update(seen)
        acked += len(plots) + len(jobs)
        with psycopg.connect(db) as conn:
            stored = {r[0] for r in conn.execute("SELECT id::text FROM plots WHERE id::text = ANY(%s)", (plots,))}
        lost_plots += len(set(plots) - stored)
        lost_jobs += sum(wait_job(db, j, timeout=60) != "successful" for j in jobs)
    return {"tries": args.tries, "writes acknowledged": acked, "plots lost": lost_plots, "jobs lost": lost_jobs,
            "recovered (max s)": round(max(recover), 2), "statuses": dict(sorted(statuses.items(), key=str))}


def _patch_cut(base: str, url: str, auth: dict, body: bytes, cut: int) -> None:
    """A PATCH that declares the whole body and sends `cut` bytes of it, then drops the link."""
    parsed = urlparse(base)
    head = (f"PATCH {urlparse(url).path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: {auth['Authorization']}\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        sock.sendall(head.encode() + body[:cut])


def uploads(args, base: str, db: str, storage: Path, auth: dict, uid: int, source: Path) -> dict:
    """Each try in a project of its own: a second copy of a file in one project is
    recognised as a duplicate and not stored again."""
    body = source.read_bytes()
    out = collections.Counter()
    for i in range(args.tries):
        project = new_project(db, uid, f"uploads {i}")
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                        {"filename": source.name, "project": str(project), "name": f"cut {i}"}.items())
        url = requests.post(f"{base}/uploads", headers={**TUS, **auth, "Upload-Length": str(len(body)),
                                                        "Upload-Metadata": meta}, timeout=30).headers["Location"]
        _patch_cut(base, url, auth, body, random.randrange(1, len(body)))
        deadline = time.monotonic() + 10            # the server may still be writing what arrived
        offset, last = -1, -2
        while offset != last and time.monotonic() < deadline:
            last, offset = offset, int(requests.head(url, headers={**TUS, **auth}, timeout=30).headers["Upload-Offset"])
            time.sleep(0.3)
        r = requests.patch(url, data=body[offset:], timeout=60, headers={
            **TUS, **auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        out["tries"] += 1
        out[f"resume {r.status_code}"] += 1
        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT f.storage_uri FROM scan_files f JOIN scans s ON s.id = f.scan_id "
                               "WHERE s.project_id = %s", (project,)).fetchone()
        stored = (storage / row[0]).read_bytes() if row else b""
        same = hashlib.sha256(stored).digest() == hashlib.sha256(body).digest()
        out["bytes lost"] += 0 if same else abs(len(body) - len(stored)) or len(body)
    return dict(out)


def new_project(db: str, owner: int, name: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]
        conn.execute("INSERT INTO project_members (project_id, user_id, role) VALUES (%s, %s, 'owner')",
                     (project, owner))
    return project


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tries", type=int, default=5)
    ap.add_argument("--outage", type=float, default=5.0)
    args = ap.parse_args()
    random.seed(1)
    os.environ["CANOPY_ACCESS_TOKEN_SECONDS"] = "86400"      # one token for the whole run
    with private_stack("bench-faults-") as stack, canopy(stack) as (_, base):
        storage = stack.work / "storage"
        uid = add_user(stack.db, "faults", "faults password")
        project = new_project(stack.db, uid, "faults")
        token = requests.post(f"{base}/auth/token", json={"username": "faults", "password": "faults password"},
                              timeout=30).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        workers = Workers(dict(service_env(stack), **FAST_REAP))
        workers.start()
        source = next(iter(sorted(SHARED.glob("bcts_*.laz"))), None)
        try:
            scan, synthetic = make_scan(stack.db, storage, project)
            source = source or synthetic
            results = {"worker kills": kills(args, base, stack.db, auth, scan, workers)}
            results["PostgreSQL restarts"] = outages(args, base, stack.db, auth, project, stack.postgres_server)
            results["Redis restarts"] = outages(args, base, stack.db, auth, project, stack.redis_server)
            results["cut uploads"] = uploads(args, base, stack.db, storage, auth, uid, source)
        finally:
            workers.stop()
    print(f"fault injection, {args.tries} tries each, outages of {args.outage:g} s")
    for name, figures in results.items():
        print(f"  {name:<20} " + ", ".join(f"{k}: {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
