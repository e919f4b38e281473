"""Upload throughput: a 2 GB tus upload over loopback next to a plain file copy on
the same disk, in the same run, and the web workers' peak RSS during it.

The bytes are random (not a point cloud): the last PATCH is answered 422 by the
validation, after every byte has been stored and checked; transfer time is what is
measured. Figures only; nothing passes or fails on time.

    .venv/bin/python bench/uploads.py [--gb 2] [--chunk-mb 256]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.features import start_canopy  # noqa: E402
from server.devservices import LocalPostgres, LocalRedis  # noqa: E402


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def workers_of(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class FileSlice:
    """A file-like view of `length` bytes of `fh` from `start` (streamed by requests)."""

    def __init__(self, fh, start: int, length: int):
        self.fh, self.left = fh, length
        fh.seek(start)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        return data

    def __len__(self) -> int:
        return self.left


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--chunk-mb", type=int, default=256)
    args = ap.parse_args()
    (ROOT / ".data").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-uploads-", dir=ROOT / ".data"))
    work.chmod(0o755)
    size = int(args.gb * (1 << 30))
    src = work / "source.bin"
    block = os.urandom(64 << 20)
    with open(src, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
        fh.write(block[: size % len(block)])
    pg, rd = LocalPostgres(work / "pg"), LocalRedis(work / "redis", persist=False)
    web = None
    try:
        t = time.perf_counter()
        shutil.copyfile(src, work / "copy.bin")
        os.sync()
        copy_s = time.perf_counter() - t
        (work / "copy.bin").unlink()

        db, redis_url = pg.start(), rd.start()
        from db.migrate import migrate
        migrate(db)
        from argon2 import PasswordHasher
        with psycopg.connect(db, autocommit=True) as conn:
            uid = conn.execute("INSERT INTO users (username, password_hash, role) VALUES ('up', %s, 'analyst') "
                               "RETURNING id", (PasswordHasher().hash("upload password"),)).fetchone()[0]
            pid = conn.execute("INSERT INTO projects (name) VALUES ('bench') RETURNING id").fetchone()[0]
            conn.execute("INSERT INTO project_members VALUES (%s, %s, 'editor')", (pid, uid))
        os.environ["CANOPY_UPLOAD_QUOTA_BYTES"] = str(size * 2)
        web, base = start_canopy(db, redis_url, work)
        token = requests.post(f"{base}/auth/token", json={"username": "up", "password": "upload password"}
                              ).json()["access_token"]
        h = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                        {"filename": "big.laz", "project": str(pid), "name": "big"}.items())
        pids = workers_of(web.pid)
        before = {p: rss_kb(p, "VmRSS") for p in pids}
        url = requests.post(f"{base}/uploads", headers={**h, "Upload-Length": str(size), "Upload-Metadata": meta}
                            ).headers["Location"]
        chunk = args.chunk_mb << 20
        t = time.perf_counter()
        statuses = []
        with open(src, "rb") as fh, requests.Session() as s:
            for offset in range(0, size, chunk):
                n = min(chunk, size - offset)
                r = s.patch(url, data=FileSlice(fh, offset, n), headers={
                    **h, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(n)})
                statuses.append(r.status_code)
        upload_s = time.perf_counter() - t
        peak = {p: rss_kb(p, "VmHWM") for p in pids}
        mb = size / 1e6
        print(f"{args.gb:g} GB, {args.chunk_mb} MB PATCHes over loopback, {os.cpu_count()} cores")
        print(f"  plain file copy on the same disk : {copy_s:6.2f} s  {mb / copy_s:7.1f} MB/s")
        print(f"  tus upload to Canopy             : {upload_s:6.2f} s  {mb / upload_s:7.1f} MB/s  "
              f"({100 * copy_s / upload_s:.0f} % of the copy; last PATCH {statuses[-1]}, others "
              f"{sorted(set(statuses[:-1]))})")
        for p in pids:
            print(f"  web worker {p}: RSS before {before[p] / 1024:6.1f} MB, peak {peak[p] / 1024:6.1f} MB, "
                  f"growth {(peak[p] - before[p]) / 1024:6.1f} MB")
    finally:
        if web:
            web.send_signal(signal.SIGTERM)
            web.wait(30)
        rd.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
