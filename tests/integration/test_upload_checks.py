"""Upload completion (issue 30): storage that cannot be written is an outage the upload
survives (503, resumable, completed once when storage is back); what is suspect in a file
reaches the user (warnings); the upload check refuses what ingestion would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import requests
from tusclient import client as tus_client

from processes.lidar.points import from_arrays
from processes.lidar.synthetic import make_forest, write_las
from tests.conftest import running_server, token_of
from tests.integration.test_jobs import _wait
from tests.integration.test_uploads import SHARED, TUS, _create, _patch
from tests.integration.test_worker_faults import _without_root_override


@pytest.fixture(scope="module")
def project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name) VALUES ('upload checks') RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def user(make_user, project):
    return make_user("analyst", {project: "editor"})


@pytest.fixture(scope="module")
def editor(user):
    return {"Authorization": f"Bearer {user.token}"}


@pytest.fixture(scope="module")
def fragile(services, tmp_path_factory):
    """A server of its own whose root cannot bypass file modes: a chmod makes its store unwritable."""
    run = tmp_path_factory.mktemp("fragile")
    with running_server(services, run, preexec_fn=_without_root_override) as base:
        yield base


def _laz(folder: Path, name: str, seed: int, classification: int | None = None) -> Path:
    points, _ = make_forest("open", size=30, seed=seed)
    if classification is not None:
        points.classification[:] = classification
    return write_las(folder / name, points, crs="EPSG:32610")


def _scans(db_url: str, name: str) -> list[int]:
    with psycopg.connect(db_url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM scans WHERE name = %s", (name,))]


def _offsets(url: str, headers: dict) -> tuple[int, int]:
    head = requests.head(url, headers={**TUS, **headers})
    assert head.status_code == 200, head.status_code
    return int(head.headers["Upload-Offset"]), int(head.headers["Upload-Length"])


def test_an_unwritable_store_at_completion_is_a_503_and_the_upload_completes_once_later(
        fragile, db_url, project, user, tmp_path):
    editor = {"Authorization": f"Bearer {token_of(fragile, user.username)}"}     # signed by that server
    storage = Path(fragile.log).parent / "storage" / "scans"     # where scan files go
    storage.mkdir(parents=True, exist_ok=True)
    for resume in ("tuspy", "empty PATCH"):
        name = f"outage {resume}"
        path = _laz(tmp_path, f"{resume[:5]}.laz", seed=40 + len(resume))
        data = path.read_bytes()
        url = _create(fragile, editor, len(data), {"filename": path.name, "project": project, "name": name}
                      ).headers["Location"]
        storage.chmod(0o555)
        try:
            r = _patch(url, editor, data, 0)
            assert r.status_code == 503, (r.status_code, r.text)
            assert r.headers["Retry-After"] and r.headers["Tus-Resumable"] == "1.0.0"
            assert "storage" in r.json()["detail"] and "/" not in r.json()["detail"], r.text
            assert _offsets(url, editor) == (len(data) - 1, len(data))     # not complete: resumable
            assert _scans(db_url, name) == []
            assert _patch(url, editor, data[-1:], len(data) - 1).status_code == 503    # still unwritable
            assert _offsets(url, editor) == (len(data) - 1, len(data))
        finally:
            storage.chmod(0o755)
        if resume == "tuspy":           # a real client resumes: HEAD, then the last byte
            tus = tus_client.TusClient(f"{fragile}/uploads", headers=editor)
            tus.uploader(str(path), url=url).upload()
        else:
            r = _patch(url, editor, b"", len(data))
            assert r.status_code == 204 and r.headers["Canopy-Scan"], (r.status_code, r.text)
        assert _offsets(url, editor) == (len(data), len(data))
        assert _patch(url, editor, b"", len(data)).status_code == 409           # complete: nothing more
        assert len(_scans(db_url, name)) == 1


def test_warnings_reach_the_upload_the_scan_item_and_the_report(server, workers, db_url, project, editor, tmp_path):
    workers.start(1)
    path = _laz(tmp_path, "unclassified.laz", seed=50, classification=1)
    data = path.read_bytes()
    url = _create(server, editor, len(data), {"filename": path.name, "project": project, "name": "no ground"}
                  ).headers["Location"]
    r = _patch(url, editor, data, 0)
    assert r.status_code == 204, r.text
    warnings = json.loads(r.headers["Canopy-Warnings"])
    assert any("classified as ground" in w for w in warnings), warnings
    _wait(server, editor, r.headers["Canopy-Job"].rsplit("/", 1)[1], timeout=120)
    item = requests.get(r.headers["Canopy-Scan"], headers=editor).json()["properties"]
    assert item["status"] == "ready" and item["warnings"] == warnings, item
    assert item["classified_ground"] is False
    report = requests.get(f"{server}/scans/{r.headers['Canopy-Scan'].rsplit('/', 1)[1]}/report", headers=editor)
    assert report.status_code == 200 and warnings[0] in report.text

    # all points on one spot, and a single point: said at once
    for name, points in (("one spot", from_arrays(np.full(20, 500000.0), np.full(20, 5400000.0),
                                                  np.linspace(100, 120, 20), classification=np.full(20, 2))),
                         ("one point", from_arrays([500000.0], [5400000.0], [100.0], classification=[2]))):
        data = write_las(tmp_path / f"{name}.las", points, crs="EPSG:32610").read_bytes()
        url = _create(server, editor, len(data), {"filename": f"{name}.las", "project": project, "name": name}
                      ).headers["Location"]
        r = _patch(url, editor, data, 0)
        assert r.status_code == 204, r.text
        said = " ".join(json.loads(r.headers["Canopy-Warnings"]))
        assert ("single point" if name == "one point" else "same x and y") in said, said


@pytest.mark.skipif(not (SHARED / "las14_pdrf6.laz").exists(), reason="../shared/data/las14_pdrf6.laz is absent")
def test_a_compound_wkt_whose_horizontal_part_is_used_is_a_warning_and_is_ingested(server, workers, project,
                                                                                    editor):
    workers.start(1)
    data = (SHARED / "las14_pdrf6.laz").read_bytes()
    url = _create(server, editor, len(data), {"filename": "compound.laz", "project": project, "name": "compound"}
                  ).headers["Location"]
    r = _patch(url, editor, data, 0)
    assert r.status_code == 204, r.text
    assert any("horizontal part" in w for w in json.loads(r.headers["Canopy-Warnings"])), r.headers
    job = _wait(server, editor, r.headers["Canopy-Job"].rsplit("/", 1)[1], timeout=120)
    assert job["status"] == "successful", job
    item = requests.get(r.headers["Canopy-Scan"], headers=editor).json()["properties"]
    assert any("horizontal part" in w for w in item["warnings"]), item


def test_the_upload_check_refuses_what_ingestion_cannot_use(server, db_url, project, editor, tmp_path):
    """A compound CRS whose horizontal part is geographic (WGS 84 + EGM96 height, common in
    delivered data) used to pass the upload and then fail ingestion; so did a file without
    points. Both are a 422 now, with nothing left behind."""
    points, _ = make_forest("open", size=20, seed=51)
    for name, path in (("geographic", write_las(tmp_path / "g.laz", points, crs="EPSG:4326+5773", version="1.4",
                                                point_format=6)),
                       ("empty", write_las(tmp_path / "e.las", points.subset(np.zeros(len(points), bool))))):
        data = path.read_bytes()
        url = _create(server, editor, len(data), {"filename": path.name, "project": project, "name": name}
                      ).headers["Location"]
        r = _patch(url, editor, data, 0)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert ("geographic" if name == "geographic" else "no points") in r.text, r.text
        assert _scans(db_url, name) == []
    # the scan's CRS given at upload makes it usable
    data = write_las(tmp_path / "n.laz", points, crs=None).read_bytes()
    meta = {"filename": "n.laz", "project": project, "name": "no crs", "crs": "EPSG:32610"}
    assert _patch(_create(server, editor, len(data), meta).headers["Location"], editor, data, 0).status_code == 204
