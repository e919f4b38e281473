"""Job system figures: queue latency and echo throughput, with real workers.

- queue latency: an idle worker, jobs submitted one at a time; time from the job's
  creation (its INSERT) to its start (the worker's claim), read from the jobs table,
  and from the HTTP submission to `running` seen by the client over SSE.
- throughput: N async `echo` jobs submitted by 4 clients to 2 workers; jobs/s from the
  first submission to the last job finished.
Figures only; nothing passes or fails on time.

    .venv/bin/python bench/jobs.py [--latency-jobs 200] [--jobs 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import add_user, canopy, private_stack, service_env  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-jobs", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with private_stack("bench-jobs-") as stack, canopy(stack) as (_, base):
        db = stack.db
        add_user(db, "bench", "bench password")
        worker = subprocess.Popen([sys.executable, "-m", "server", "worker", "--workers", str(args.workers)],
                                  cwd=ROOT, env=service_env(stack), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            run(args, base, db)
        finally:
            worker.send_signal(signal.SIGINT)
            worker.wait(30)


def run(args, base: str, db: str) -> None:
    token = requests.post(f"{base}/auth/token", json={"username": "bench", "password": "bench password"}
                          ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Prefer": "respond-async"}
    session = requests.Session()
    time.sleep(2)                                     # workers up and blocked on the queue

    # -- queue latency, idle worker ----------------------------------------------------
    client_ms = []
    ids = []
    for i in range(args.latency_jobs):
        t0 = time.perf_counter()
        r = session.post(f"{base}/processes/echo/execution", json={"inputs": {"message": "x", "delay": 0.05}},
                         headers=headers)
        job_id = r.json()["jobID"]
        ids.append(job_id)
        with session.get(f"{base}/jobs/{job_id}/events", headers=headers, stream=True) as ev:
            for line in ev.iter_lines(decode_unicode=True):
                if line.startswith("data: ") and json.loads(line[6:])["status"] != "accepted":
                    client_ms.append((time.perf_counter() - t0) * 1000)
                    break
        while session.get(f"{base}/jobs/{job_id}", headers=headers).json()["status"] != "successful":
            time.sleep(0.01)
    with psycopg.connect(db) as conn:
        server_ms = [r[0] for r in conn.execute(
            "SELECT extract(epoch FROM job_start_datetime - created) * 1000 FROM jobs "
            "WHERE identifier = ANY(%s)", (ids,)).fetchall()]
    print(f"queue latency over {args.latency_jobs} jobs, idle worker ({args.workers} worker processes):")
    print(f"  created -> claimed by a worker (server clock): p50 {pct(server_ms, .5):6.1f} ms   "
          f"p99 {pct(server_ms, .99):6.1f} ms")
    print(f"  HTTP submit -> 'running' seen over SSE:         p50 {pct(client_ms, .5):6.1f} ms   "
          f"p99 {pct(client_ms, .99):6.1f} ms")

    # -- throughput ------------------------------------------------------------------------
    def submit(i: int) -> str:
        with requests.Session() as s:
            return s.post(f"{base}/processes/echo/execution", json={"inputs": {"message": f"m{i}"}},
                          headers=headers).json()["jobID"]

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(submit, range(args.jobs)))
    t_submit = time.perf_counter() - t0
    with psycopg.connect(db) as conn:
        while True:
            done, failed = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'successful'), count(*) FILTER (WHERE status = 'failed') "
                "FROM jobs WHERE identifier = ANY(%s)", (ids,)).fetchone()
            if done + failed >= args.jobs or time.perf_counter() - t0 > 600:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        once = conn.execute("SELECT count(*) FROM jobs WHERE identifier = ANY(%s) AND attempts = 1",
                            (ids,)).fetchone()[0]
    print(f"echo throughput, {args.jobs} async jobs from 4 clients, {args.workers} worker processes, "
          f"{os.cpu_count()} cores (web, workers, PostgreSQL, Redis and clients share them):")
    print(f"  submitted in {t_submit:.2f} s ({args.jobs / t_submit:.0f} submissions/s)")
    print(f"  all finished in {elapsed:.2f} s: {done / elapsed:.0f} jobs/s end to end "
          f"({done} successful, {failed} failed, {once} ran exactly once)")


if __name__ == "__main__":
    main()
