"""tus uploads against the real server: real clients (tuspy, tus-js-client), broken
connections resumed, bad files refused, scans ingested by real workers."""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests
from pyproj import Transformer
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from processes.lidar.synthetic import make_forest, write_las

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def upload_project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name, visibility) VALUES ('uploads', 'private') "
                            "RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def uploader(make_user, upload_project):
    user = make_user("analyst", {upload_project: "editor"})
    return {"Authorization": f"Bearer {user.token}"}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[list[Path], int | None]:
    """The four bcts tiles when ../shared/data has them, else four synthetic LAZ tiles."""
    real = sorted(SHARED.glob("bcts_*.laz"))
    if len(real) == 4:
        return real, 2_834_350
    out = tmp_path_factory.mktemp("tiles")
    points, _ = make_forest("open", size=100, seed=5)
    paths = []
    for i, (dx, dy) in enumerate(((0, 0), (50, 0), (0, 50), (50, 50))):
        x0, y0 = points.x.min() + dx, points.y.min() + dy
        keep = (points.x >= x0) & (points.x < x0 + 50) & (points.y >= y0) & (points.y < y0 + 50)
        paths.append(write_las(out / f"tile_{i}.laz", points.subset(keep), crs="EPSG:3005"))
    return paths, None


class BreakingProxy:
    """A TCP proxy to the server that cuts the next connection after `cut_after` bytes
    from the client, once each time it is armed (a flaky link, for real)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.cut_after: int | None = None
        self.sent = 0
        self.cuts = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def arm(self, cut_after: int) -> None:
        """Cut the connection that carries the client's next `cut_after`-th byte."""
        with self.lock:
            self.cut_after, self.sent = cut_after, 0

    def _serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, from_client: bool):
        try:
            while data := src.recv(65536):
                if from_client:
                    with self.lock:
                        cut = None
                        if self.cut_after is not None:
                            if self.sent + len(data) > self.cut_after:
                                cut, self.cut_after = self.cut_after - self.sent, None
                                self.cuts += 1
                            else:
                                self.sent += len(data)
                    if cut is not None:
                        dst.sendall(data[:cut])
                        raise ConnectionResetError("cut")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.sock.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tuspy_uploads_tiles_as_one_scan_resuming_broken_connections(server, workers, db_url, upload_project,
                                                                     uploader, tiles):
    paths, expected_points = tiles
    workers.start(1)
    proxy = BreakingProxy(int(server.rsplit(":", 1)[1]))
    via_proxy = f"http://127.0.0.1:{proxy.port}/uploads"
    storage = Path(server.log).parent / "storage"
    scan_id = None
    try:
        for i, path in enumerate(paths):
            size = path.stat().st_size
            meta = {"filename": path.name, "project": str(upload_project)}
            meta.update({"scan": str(scan_id)} if scan_id else {"name": "bcts block"})
            client = tus_client.TusClient(via_proxy, headers=uploader)
            up = client.uploader(str(path), chunk_size=size, metadata=meta)   # one PATCH: the cut hits it
            url = up.create_url()
            up.set_url(url.replace(server, f"http://127.0.0.1:{proxy.port}"))  # Location names the server
            proxy.arm(size // 2 + 1000)
            with pytest.raises((TusCommunicationError, TusUploadFailed, requests.RequestException)):
                up.upload()
            deadline = time.monotonic() + 10      # the server may still be reading what arrived before the cut
            while (offset := int(requests.head(url, headers={**TUS, **uploader}).headers["Upload-Offset"])) == 0 \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            assert 0 < offset < size, (offset, size)           # part of the bytes arrived and were kept
            resumed = tus_client.TusClient(via_proxy, headers=uploader).uploader(
                str(path), url=up.url, chunk_size=4 << 20, upload_checksum=True)
            assert resumed.offset == offset                     # tuspy asked the server where to go on
            resumed.upload()
            head = requests.head(url, headers={**TUS, **uploader})
            assert head.headers["Upload-Offset"] == str(size)
            with psycopg.connect(db_url) as conn:
                meta_row = conn.execute("SELECT metadata FROM uploads WHERE id = %s",
                                        (url.rsplit("/", 1)[1],)).fetchone()[0]
                key = conn.execute("SELECT storage_uri FROM scan_files WHERE scan_id = %s AND sha256 = %s",
                                   (meta_row["scan"], meta_row["sha256"])).fetchone()[0]
            assert _sha256(storage / key) == _sha256(path)
            scan_id = scan_id or meta_row["scan"]
            assert meta_row["scan"] == scan_id
    finally:
        proxy.close()
    assert proxy.cuts == 4
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        scan = requests.get(f"{server}/collections/scans/items/{scan_id}", headers=uploader).json()
        props = scan["properties"]
        with psycopg.connect(db_url) as conn:
            pending = conn.execute("SELECT count(*) FROM jobs WHERE process_id = 'ingest-scan' AND inputs->'inputs'->>'scan' = %s "
                                   "AND status IN ('accepted', 'running')", (str(scan_id),)).fetchone()[0]
        if props["status"] in ("ready", "failed") and pending == 0:
            break
        time.sleep(0.5)
    assert props["status"] == "ready", props
    assert props["crs_epsg"] == 3005
    if expected_points:
        assert props["point_count"] == expected_points
    else:
        import laspy
        assert props["point_count"] == sum(laspy.read(p).header.point_count for p in paths)
    # the footprint lies inside the tiles' bounds
    import laspy
    bounds = [laspy.open(p).header for p in paths]
    minx, miny = min(h.mins[0] for h in bounds), min(h.mins[1] for h in bounds)
    maxx, maxy = max(h.maxs[0] for h in bounds), max(h.maxs[1] for h in bounds)
    to_ll = Transformer.from_crs(3005, 4326, always_xy=True)
    corners = [to_ll.transform(x, y) for x in (minx, maxx) for y in (miny, maxy)]
    lons, lats = [c[0] for c in corners], [c[1] for c in corners]
    ring = scan["geometry"]["coordinates"][0]
    assert all(min(lons) - 1e-6 <= lon <= max(lons) + 1e-6 and min(lats) - 1e-6 <= lat <= max(lats) + 1e-6
               for lon, lat in ring)


def _create(server, headers, length: int, meta: dict, **extra) -> requests.Response:
    encoded = ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in meta.items())
    return requests.post(f"{server}/uploads", headers={**TUS, **headers, "Upload-Length": str(length),
                                                       "Upload-Metadata": encoded, **extra})


def _patch(url, headers, body: bytes, offset: int, **extra) -> requests.Response:
    return requests.patch(url, data=body, headers={**TUS, **headers, "Upload-Offset": str(offset),
                                                   "Content-Type": "application/offset+octet-stream", **extra})


def _nothing_left(db_url, run_dir: Path, upload_url: str) -> bool:
    """No upload row, and no bytes in the workspace (scratch) or the storage."""
    upload_id = upload_url.rsplit("/", 1)[1]
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT 1 FROM uploads WHERE id = %s", (upload_id,)).fetchone()
    return row is None and not list(run_dir.glob(f"*/uploads/{upload_id}*"))


@pytest.fixture(scope="module")
def small_laz(tmp_path_factory) -> Path:
    points, _ = make_forest("open", size=40, seed=11)
    return write_las(tmp_path_factory.mktemp("small") / "small.laz", points, crs="EPSG:3005")


def test_bad_uploads_get_the_right_status_and_leave_nothing(server, db_url, upload_project, uploader, small_laz,
                                                             make_user):
    run_dir = Path(server.log).parent           # the workspace and the storage are under it
    meta = {"filename": "x.laz", "project": upload_project, "name": "bad"}
    data = small_laz.read_bytes()
    # a truncated LAZ: the upload completes, the file is refused, nothing stays
    truncated = data[: int(len(data) * 0.7)]
    url = _create(server, uploader, len(truncated), meta).headers["Location"]
    r = _patch(url, uploader, truncated, 0)
    assert r.status_code == 422 and "LAS" in r.text, r.text
    assert _nothing_left(db_url, run_dir, url)
    # a text file renamed .laz
    text = b"id,height\n1,20.5\n" * 100
    url = _create(server, uploader, len(text), meta).headers["Location"]
    assert _patch(url, uploader, text, 0).status_code == 422
    assert _nothing_left(db_url, run_dir, url)
    # a wrong checksum: 460, the chunk is discarded, the offset stays
    url = _create(server, uploader, len(data), meta).headers["Location"]
    bad = base64.b64encode(hashlib.sha1(b"something else").digest()).decode()
    assert _patch(url, uploader, data[:1000], 0, **{"Upload-Checksum": f"sha1 {bad}"}).status_code == 460
    assert requests.head(url, headers={**TUS, **uploader}).headers["Upload-Offset"] == "0"
    good = base64.b64encode(hashlib.sha256(data[:1000]).digest()).decode()
    assert _patch(url, uploader, data[:1000], 0, **{"Upload-Checksum": f"sha256 {good}"}).status_code == 204
    # a PATCH at a wrong offset
    assert _patch(url, uploader, data[1000:2000], 500).status_code == 409
    assert requests.head(url, headers={**TUS, **uploader}).headers["Upload-Offset"] == "1000"
    # termination removes the bytes
    assert requests.delete(url, headers={**TUS, **uploader}).status_code == 204
    assert _nothing_left(db_url, run_dir, url)
    # a wrong protocol version
    r = requests.post(f"{server}/uploads", headers={**uploader, "Tus-Resumable": "0.2.2", "Upload-Length": "10"})
    assert r.status_code == 412 and r.headers["Tus-Version"] == "1.0.0"
    # beyond the quota: refused before any byte
    quota_user = make_user("analyst", {upload_project: "editor"})
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET quota_bytes = 5000 WHERE id = %s", (quota_user.id,))
    r = _create(server, {"Authorization": f"Bearer {quota_user.token}"}, 6000, meta)
    assert r.status_code == 413 and "quota" in r.text
    # beyond Tus-Max-Size
    max_size = int(requests.options(f"{server}/uploads").headers["Tus-Max-Size"])
    assert _create(server, uploader, max_size + 1, meta).status_code == 413
    # an upload by a viewer of the project, and by someone who cannot see it
    viewer = make_user("viewer", {upload_project: "viewer"})
    assert _create(server, {"Authorization": f"Bearer {viewer.token}"}, 100, meta).status_code == 403
    assert _create(server, {"Authorization": f"Bearer {make_user('viewer').token}"}, 100, meta).status_code == 404
    assert _create(server, {}, 100, meta).status_code == 401
    # someone else's upload is invisible
    url = _create(server, uploader, len(data), meta).headers["Location"]
    other = {"Authorization": f"Bearer {make_user('admin' if False else 'analyst', {upload_project: 'editor'}).token}"}
    assert requests.head(url, headers={**TUS, **other}).status_code == 404
    assert _patch(url, other, data[:10], 0).status_code == 404


def test_an_upload_checksum_without_a_whole_digest_is_a_400(server, upload_project, uploader):
    """A malformed Upload-Checksum is a bad request (400), not a mismatch (460): the chunk was
    never compared, and the client must fix its header, not resend the bytes."""
    meta = {"filename": "c.laz", "project": upload_project, "name": "checksum"}
    url = _create(server, uploader, 1000, meta).headers["Location"]
    chunk = b"x" * 100
    short = base64.b64encode(hashlib.sha256(chunk).digest()[:20]).decode()
    for header, needle in (("sha256", "sha256 digest"), ("sha256 ", "sha256 digest"), (f"sha256 {short}", "32 bytes"),
                           ("sha1 " + base64.b64encode(hashlib.sha256(chunk).digest()).decode(), "20 bytes"),
                           ("md5 !!!", "not base64"), ("crc32 AAAA", "not supported")):
        r = _patch(url, uploader, chunk, 0, **{"Upload-Checksum": header})
        assert r.status_code == 400, (header, r.status_code, r.text)
        assert needle in r.text, (header, r.text)
    assert requests.head(url, headers={**TUS, **uploader}).headers["Upload-Offset"] == "0"
    good = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
    assert _patch(url, uploader, chunk, 0, **{"Upload-Checksum": f"sha256 {good}"}).status_code == 204
    assert requests.delete(url, headers={**TUS, **uploader}).status_code == 204


def test_expired_uploads_answer_410_and_are_purged(server, workers, db_url, upload_project, uploader):
    run_dir = Path(server.log).parent           # the workspace and the storage are under it
    url = _create(server, uploader, 5000, {"filename": "e.laz", "project": upload_project, "name": "e"}).headers[
        "Location"]
    assert _patch(url, uploader, b"\0" * 100, 0).status_code == 204
    upload_id = url.rsplit("/", 1)[1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE uploads SET expires_at = now() - interval '1 minute' WHERE id = %s", (upload_id,))
    assert requests.head(url, headers={**TUS, **uploader}).status_code == 410
    assert _patch(url, uploader, b"\0" * 100, 100).status_code == 410
    workers.start(1, CANOPY_REAP_EVERY="1")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _nothing_left(db_url, run_dir, url):
        time.sleep(0.3)
    assert _nothing_left(db_url, run_dir, url)


def test_creation_with_upload_options_and_duplicates(server, workers, db_url, upload_project, uploader, small_laz):
    opts = requests.options(f"{server}/uploads")
    assert opts.status_code == 204
    assert set(opts.headers["Tus-Extension"].split(",")) == {"creation", "creation-with-upload", "expiration",
                                                             "checksum", "termination"}
    assert "sha1" in opts.headers["Tus-Checksum-Algorithm"] and "sha256" in opts.headers["Tus-Checksum-Algorithm"]
    data = small_laz.read_bytes()
    meta = {"filename": "small.laz", "project": upload_project, "name": "small", "crs": "EPSG:3005"}
    encoded = ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in meta.items())
    r = requests.post(f"{server}/uploads", data=data, headers={
        **TUS, **uploader, "Upload-Length": str(len(data)), "Upload-Metadata": encoded,
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 201 and r.headers["Upload-Offset"] == str(len(data)), r.text
    first_scan = r.headers["Canopy-Scan"]
    # the same bytes again: recognised by their sha256, no second scan
    r = requests.post(f"{server}/uploads", data=data, headers={
        **TUS, **uploader, "Upload-Length": str(len(data)), "Upload-Metadata": encoded,
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 201 and r.headers["Canopy-Scan"] == first_scan and r.headers["Canopy-Duplicate"] == "true"
    head = requests.head(r.headers["Location"], headers={**TUS, **uploader})
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert "filename" in head.headers["Upload-Metadata"]


@pytest.mark.skipif(not shutil.which("npm") or not shutil.which("node"), reason="node and npm are needed")
def test_tus_js_client_completes_an_upload(server, db_url, upload_project, uploader, small_laz):
    node_dir = ROOT / ".data" / "node-tus"
    if not (node_dir / "node_modules" / "tus-js-client").exists():
        node_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(node_dir),
                        "tus-js-client@4"], check=True, timeout=300)
    script = node_dir / "upload.js"
    script.write_text("""
const tus = require('tus-js-client');
const fs = require('fs');
const [endpoint, path, token, project] = process.argv.slice(2);
const file = fs.createReadStream(path);
const upload = new tus.Upload(file, {
  endpoint, chunkSize: 65536, uploadSize: fs.statSync(path).size,
  headers: {Authorization: 'Bearer ' + token},
  metadata: {filename: 'js.laz', project, name: 'from tus-js-client'},
  onError: (e) => { console.error('ERROR ' + e); process.exit(1); },
  onSuccess: () => { console.log('URL ' + upload.url); process.exit(0); },
});
upload.start();
""")
    data = small_laz.read_bytes()
    altered = small_laz.parent / "js.laz"         # different bytes than other tests' uploads (no duplicate)
    points, _ = make_forest("open", size=30, seed=21)
    write_las(altered, points, crs="EPSG:3005")
    out = subprocess.run(["node", str(script), f"{server}/uploads", str(altered),
                          uploader["Authorization"].split()[1], str(upload_project)],
                         capture_output=True, text=True, timeout=120, cwd=node_dir)
    assert out.returncode == 0, out.stderr + out.stdout
    url = out.stdout.split("URL ", 1)[1].strip()
    with psycopg.connect(db_url) as conn:
        completed, meta = conn.execute("SELECT completed_at, metadata FROM uploads WHERE id = %s",
                                       (url.rsplit("/", 1)[1],)).fetchone()
    assert completed is not None and meta["scan"]
    assert len(data) > 0


def test_terminating_a_completed_upload_keeps_the_scans_file(server, db_url, upload_project, uploader, tmp_path):
    """tus termination forgets a completed upload; the file it became belongs to its scan."""
    points, _ = make_forest("open", size=30, seed=31)
    data = write_las(tmp_path / "kept.laz", points, crs="EPSG:3005").read_bytes()
    meta = {"filename": "kept.laz", "project": upload_project, "name": "kept"}
    encoded = ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in meta.items())
    r = requests.post(f"{server}/uploads", data=data, headers={
        **TUS, **uploader, "Upload-Length": str(len(data)), "Upload-Metadata": encoded,
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 201 and r.headers["Upload-Offset"] == str(len(data)), r.text
    url, scan_id = r.headers["Location"], int(r.headers["Canopy-Scan"].rsplit("/", 1)[1])
    digest = hashlib.sha256(data).hexdigest()
    with psycopg.connect(db_url) as conn:
        key = conn.execute("SELECT storage_uri FROM scan_files WHERE scan_id = %s AND sha256 = %s",
                           (scan_id, digest)).fetchone()[0]
    stored = Path(server.log).parent / "storage" / key
    assert _sha256(stored) == digest

    assert requests.delete(url, headers={**TUS, **uploader}).status_code == 204
    assert stored.is_file() and _sha256(stored) == digest            # the scan's file is untouched
    assert requests.head(url, headers={**TUS, **uploader}).status_code == 404
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM uploads WHERE id = %s", (url.rsplit("/", 1)[1],)).fetchone()[0] == 0
        assert conn.execute("SELECT storage_uri FROM scan_files WHERE scan_id = %s", (scan_id,)).fetchone()[0] == key
    scan = requests.get(f"{server}/collections/scans/items/{scan_id}", headers=uploader)
    assert scan.status_code == 200


def test_quota_counts_the_bytes_a_user_holds_now(server, db_url, upload_project, make_user, tmp_path):
    """The quota counts unfinished uploads and the files of the user's scans: forgetting a
    completed upload frees nothing (its file stays with the scan), deleting the scan does."""
    points, _ = make_forest("open", size=30, seed=41)
    data = write_las(tmp_path / "held.laz", points, crs="EPSG:3005").read_bytes()
    user = make_user("analyst", {upload_project: "editor"})
    auth = {"Authorization": f"Bearer {user.token}"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET quota_bytes = %s WHERE id = %s", (len(data) + 1000, user.id))
    meta = {"filename": "held.laz", "project": upload_project, "name": "held"}
    encoded = ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in meta.items())
    r = requests.post(f"{server}/uploads", data=data, headers={
        **TUS, **auth, "Upload-Length": str(len(data)), "Upload-Metadata": encoded,
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 201 and r.headers["Upload-Offset"] == str(len(data)), r.text
    scan_id, ingest = int(r.headers["Canopy-Scan"].rsplit("/", 1)[1]), r.headers["Canopy-Job"]
    assert requests.delete(r.headers["Location"], headers={**TUS, **auth}).status_code == 204
    more = {"filename": "more.laz", "project": upload_project, "name": "more"}
    refused = _create(server, auth, 2000, more)
    assert refused.status_code == 413 and f"({len(data)} of {len(data) + 1000} used)" in refused.text
    assert _create(server, auth, 900, more).status_code == 201              # what is left fits
    assert requests.delete(ingest, headers=auth).status_code == 200         # no worker here: still queued
    deleted = requests.delete(f"{server}/scans/{scan_id}", headers=auth)
    assert deleted.status_code == 204, deleted.text
    assert _create(server, auth, len(data), more).status_code == 201        # the scan's bytes are given back


def _slow_patch(url: str, headers: dict, body: bytes, pieces: int, pause: float) -> int:
    """A PATCH whose body arrives in `pieces` over `pieces * pause` seconds; its status."""
    import http.client
    from urllib.parse import urlparse
    target = urlparse(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    try:
        conn.putrequest("PATCH", target.path)
        for key, value in {**TUS, **headers, "Upload-Offset": "0", "Content-Length": str(len(body)),
                           "Content-Type": "application/offset+octet-stream"}.items():
            conn.putheader(key, value)
        conn.endheaders()
        step = len(body) // pieces
        for i in range(pieces):
            conn.send(body[i * step:] if i == pieces - 1 else body[i * step:(i + 1) * step])
            time.sleep(pause)
        return conn.getresponse().status
    finally:
        conn.close()


def test_32_concurrent_patches_on_different_uploads_succeed(server, db_url, upload_project, uploader):
    """A PATCH holds no database connection while its body arrives: 32 slow bodies at once
    (16 served at a time by 2 workers x 8 threads, each with a pool of 8) all succeed."""
    from concurrent.futures import ThreadPoolExecutor
    meta = {"filename": "c.laz", "project": upload_project, "name": "concurrent"}
    urls = [_create(server, uploader, 1 << 20, meta).headers["Location"] for _ in range(32)]
    body = bytes(range(256)) * 256                                   # 64 KiB of the 1 MiB each
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda u: _slow_patch(u, uploader, body, 8, 0.2), urls))
    assert statuses == [204] * 32, statuses
    offsets = [requests.head(u, headers={**TUS, **uploader}).headers["Upload-Offset"] for u in urls]
    assert offsets == [str(len(body))] * 32
    run_dir = Path(server.log).parent
    assert all((run_dir / "work" / "uploads" / f"{u.rsplit('/', 1)[1]}.part").read_bytes() == body for u in urls)
    for url in urls:
        assert requests.delete(url, headers={**TUS, **uploader}).status_code == 204
