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
import http.client
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import add_user, canopy, private_stack  # noqa: E402


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
    size = int(args.gb * (1 << 30))
    os.environ["CANOPY_UPLOAD_QUOTA_BYTES"] = str(size * 2)
    with private_stack("bench-uploads-") as stack:
        src = stack.work / "source.bin"
        block = os.urandom(64 << 20)
        with open(src, "wb") as fh:
            for _ in range(size // len(block)):
                fh.write(block)
            fh.write(block[: size % len(block)])
        t = time.perf_counter()
        shutil.copyfile(src, stack.work / "copy.bin")
        os.sync()
        copy_s = time.perf_counter() - t
        (stack.work / "copy.bin").unlink()
        uid = add_user(stack.db, "up", "upload password")
        with psycopg.connect(stack.db, autocommit=True) as conn:
            pid = conn.execute("INSERT INTO projects (name) VALUES ('bench') RETURNING id").fetchone()[0]
            conn.execute("INSERT INTO project_members VALUES (%s, %s, 'editor')", (pid, uid))
        with canopy(stack) as (web, base):
            upload(args, base, src, size, copy_s, pid, workers_of(web.pid))


def upload(args, base: str, src: Path, size: int, copy_s: float, pid: int, pids: list[int]) -> None:
    token = requests.post(f"{base}/auth/token", json={"username": "up", "password": "upload password"}
                          ).json()["access_token"]
    h = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                    {"filename": "big.laz", "project": str(pid), "name": "big"}.items())
    for p in pids:               # reset the peak-RSS counter (VmHWM) so it measures the upload alone
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            pass
    before = {p: rss_kb(p, "VmRSS") for p in pids}
    url = requests.post(f"{base}/uploads", headers={**h, "Upload-Length": str(size), "Upload-Metadata": meta}
                        ).headers["Location"]
    chunk = args.chunk_mb << 20
    t = time.perf_counter()
    statuses = []
    parsed = urlparse(url)
    # http.client with 1 MiB send blocks (requests sends files in 8 KiB blocks, which costs
    # the client more CPU than the server spends; curl and tus-js-client use large buffers)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, blocksize=1 << 20)
    with open(src, "rb") as fh:
        for offset in range(0, size, chunk):
            n = min(chunk, size - offset)
            conn.request("PATCH", parsed.path, body=FileSlice(fh, offset, n), headers={
                **h, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(n)})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    conn.close()
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


if __name__ == "__main__":
    main()
