"""Open job event streams beside the API: /healthz and an items page latency (p50/p99)
with 0 and with N idle `GET /jobs/{id}/events` streams open on the same server.

    .venv/bin/python bench/sse.py --streams 500 --requests 300

Streams are opened by one asyncio client (a socket each, no thread), each read up to
its first event, then left idle while the API is measured from another thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def add_jobs(db: str, owner_id: int, n: int, prefix: str = "sse") -> list[str]:
    """`n` accepted jobs of `owner_id`, straight in the table (nothing runs them)."""
    ids = [f"{prefix}-{owner_id}-{i}-{time.monotonic_ns()}" for i in range(n)]
    with psycopg.connect(db, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO jobs (identifier, process_id, status, progress, message, owner_id, inputs) "
                            "VALUES (%s, 'echo', 'accepted', 0, 'queued', %s, '{}')", [(i, owner_id) for i in ids])
    return ids


class Streams:
    """Idle event streams held open by an asyncio loop on a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def _run(self, coro, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open_one(self, base: str, path: str, token: str) -> tuple:
        url = urlparse(base)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        status = head.split(b"\r\n", 1)[0].decode()
        first = await asyncio.wait_for(reader.readuntil(b"\n\n"), 60) if b" 200 " in head else b""
        return status, first, reader, writer

    def open(self, base: str, job_ids: list[str], token: str, batch: int = 50) -> list[tuple[str, bytes]]:
        """Open one stream per job id (in batches); the status line and first frame of each."""
        async def go():
            out = []
            for i in range(0, len(job_ids), batch):
                for status, first, reader, writer in await asyncio.gather(
                        *(self._open_one(base, f"/jobs/{j}/events", token) for j in job_ids[i:i + batch])):
                    self.conns.append((reader, writer))      # stream i is job_ids[i]
                    out.append((status, first))
            return out
        return self._run(go())

    def read(self, index: int, until: bytes = b"\n\n", timeout: float = 30) -> bytes:
        """The next bytes of stream `index` up to `until` (b"" when it closed)."""
        async def go():
            try:
                return await asyncio.wait_for(self.conns[index][0].readuntil(until), timeout)
            except asyncio.IncompleteReadError as err:
                return err.partial
        return self._run(go(), timeout + 5)

    def next_event(self, index: int, timeout: float = 30) -> tuple[str, dict] | None:
        """The next (event, data) of stream `index`, past comments, chunk sizes and
        `retry` lines; None when the stream closed without one."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = self.read(index, timeout=left)
            if not raw.endswith(b"\n\n"):
                return None
            found = frames(raw)
            if found:
                return found[0]
        raise TimeoutError(f"no event on stream {index} in {timeout} s")

    def close(self) -> None:
        async def go():
            for _, writer in self.conns:
                writer.close()
            self.conns.clear()
        self._run(go())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def frames(raw: bytes) -> list[tuple[str, dict]]:
    """(event, data) of each SSE frame in `raw` that has both (chunk-size lines ignored)."""
    out = []
    for frame in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields and "data" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def latencies(base: str, path: str, n: int, headers: dict | None = None) -> list[float]:
    """Milliseconds of `n` sequential GETs of `path` on one keep-alive session (each must be 200)."""
    out = []
    with requests.Session() as session:
        for _ in range(n):
            t = time.perf_counter()
            r = session.get(base + path, headers=headers, timeout=30)
            out.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    from bench.stack import add_user, canopy, private_stack

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    with private_stack("bench-sse-") as stack, canopy(stack) as (_, base):
        uid = add_user(stack.db, "bench", "bench password 1", "analyst")
        token = requests.post(f"{base}/auth/token", json={"username": "bench", "password": "bench password 1"},
                              timeout=30).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        print(f"{'open streams':>13} {'route':<32} {'p50 ms':>8} {'p99 ms':>8}")
        for n in (0, args.streams):
            streams = Streams()
            t = time.perf_counter()
            opened = streams.open(base, add_jobs(stack.db, uid, n), token) if n else []
            took = time.perf_counter() - t
            bad = [(s, first) for s, first in opened if " 200 " not in s + " " or b"event: accepted" not in first]
            for path, headers in (("/healthz", None), ("/collections/plots/items?limit=10", auth)):
                ms = latencies(base, path, args.requests, headers)
                print(f"{n:>13} {path:<32} {p(ms, 50):>8.2f} {p(ms, 99):>8.2f}")
            if n:
                print(f"  {n} streams opened in {took:.1f} s, {len(bad)} not answered with their first event"
                      + (f": {sorted(set(s + ' ' + repr(first[:60]) for s, first in bad))}" if bad else ""))
            streams.close()


if __name__ == "__main__":
    main()
