"""Worker faults tried from outside (issue 30): kill -9 a worker's children during a job,
kill -9 the worker's parent, make the store unwritable during a job's publishing step.
Each job ends successful exactly once: one attempt per kill plus the one that finished,
one set of products."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
import requests

from processes.lidar.synthetic import make_forest
from tests.integration.test_jobs import _submit, _wait
from tests.integration.test_lidar_processes import _scan

# a dead worker's job is requeued within ~4 s; heartbeats twice as often as the default
FAST = {"CANOPY_JOB_STALE": "3", "CANOPY_REAP_EVERY": "1", "CANOPY_JOB_HEARTBEAT": "0.5"}


@pytest.fixture(scope="module")
def project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name) VALUES ('worker faults') RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def owner(make_user, project):
    return {"Authorization": f"Bearer {make_user('analyst', {project: 'owner'}).token}"}


@pytest.fixture(scope="module")
def points():
    return make_forest("open", size=60, seed=30)[0]


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_children(consumer: int, kids: list[int] | None = None) -> int:
    """kill -9 every process the consumer forked (its workers and helpers), or those of
    them already listed; how many."""
    kids = _children(consumer) if kids is None else kids
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
    return len(kids)


def _job(db_url: str, job_id: str) -> tuple[str, int, int, str]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT status, attempts, progress, message FROM jobs WHERE identifier = %s",
                            (job_id,)).fetchone()


def _wait_progress(db_url: str, job_id: str, attempt: int, at_least: int, timeout: float = 120) -> None:
    """Wait until the job's `attempt` runs and has reached `at_least` percent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, attempts, progress, _ = job = _job(db_url, job_id)
        assert status in ("accepted", "running"), job
        if status == "running" and attempts == attempt and progress >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {at_least} % on attempt {attempt}: {job}")


def _outcome(db_url: str, job_id: str) -> tuple[str, int, int, list[str]]:
    """(status, attempts, dead letters, raster kinds of its run, one row each)."""
    with psycopg.connect(db_url) as conn:
        status, attempts = conn.execute("SELECT status, attempts FROM jobs WHERE identifier = %s",
                                        (job_id,)).fetchone()
        dead = conn.execute("SELECT count(*) FROM dead_letters WHERE job_id = %s", (job_id,)).fetchone()[0]
        kinds = [r[0] for r in conn.execute("SELECT kind FROM rasters WHERE run_id = %s ORDER BY kind", (job_id,))]
    return status, attempts, dead, kinds


def _stored(server, scan_id: int) -> list[str]:
    """The raster files in the store for a scan."""
    folder = Path(server.log).parent / "storage" / "rasters" / f"scan-{scan_id}"
    return sorted(p.name for p in folder.glob("*.tif")) if folder.is_dir() else []


def test_a_job_whose_worker_children_are_killed_at_two_phases_succeeds_once(server, workers, runner_headers,
                                                                            db_url):
    """The consumer replaces its killed children; their forks must not share its database
    connections, and the retry's heartbeats must keep the reaper off the running job."""
    consumer = workers.start(1, **FAST)
    job_id = _submit(server, runner_headers, {"message": "killed twice", "delay": 4}).json()["jobID"]
    _wait_progress(db_url, job_id, attempt=1, at_least=0)      # just claimed
    assert _kill_children(consumer.pid) >= 1
    _wait_progress(db_url, job_id, attempt=2, at_least=50)     # half-way through its retry
    assert _kill_children(consumer.pid) >= 1
    job = _wait(server, runner_headers, job_id, timeout=120)
    assert job["status"] == "successful", job
    time.sleep(4)                                     # a reaper that took it for dead would have requeued it
    status, attempts, dead, _ = _outcome(db_url, job_id)
    assert (status, attempts, dead) == ("successful", 3, 0)
    assert requests.get(f"{server}/jobs/{job_id}/results", headers=runner_headers).json()["echo"] == "killed twice"
    assert consumer.poll() is None                    # the consumer itself lived on


def test_a_job_killed_on_every_attempt_ends_in_the_dead_letter_with_the_reason(server, workers, runner_headers,
                                                                              db_url):
    consumer = workers.start(1, CANOPY_JOB_ATTEMPTS="2", **FAST)
    job_id = _submit(server, runner_headers, {"message": "doomed", "delay": 4}).json()["jobID"]
    for attempt in (1, 2):
        _wait_progress(db_url, job_id, attempt=attempt, at_least=10)
        assert _kill_children(consumer.pid) >= 1
    job = _wait(server, runner_headers, job_id, timeout=60)
    assert job["status"] == "failed" and "stopped responding on every attempt" in job["message"], job
    with psycopg.connect(db_url) as conn:
        dead = conn.execute("SELECT error, attempts FROM dead_letters WHERE job_id = %s", (job_id,)).fetchall()
    assert dead == [("worker lost on every attempt", 2)]


@pytest.mark.parametrize("phase", ["processing", "publishing"])
def test_a_product_job_killed_mid_run_publishes_one_set_of_products(phase, server, workers, owner, project, points,
                                                                    db_url):
    """Killed while it computes (20 %), or the moment its first raster lands in the store
    (between publishing and committing, unless the commit was quicker than the kill)."""
    consumer = workers.start(1, **FAST)
    scan_id = _scan(server, db_url, project, points, name=f"killed-{phase}.laz")
    r = requests.post(f"{server}/processes/forest-inventory/execution", json={"inputs": {"scan": scan_id}},
                      headers={"Prefer": "respond-async", **owner})
    job_id = r.json()["jobID"]
    kids = None
    if phase == "processing":
        _wait_progress(db_url, job_id, attempt=1, at_least=20)
    else:
        _wait_progress(db_url, job_id, attempt=1, at_least=0)
        kids, deadline = _children(consumer.pid), time.monotonic() + 120
        folder = Path(server.log).parent / "storage" / "rasters" / f"scan-{scan_id}"
        while not (folder.is_dir() and os.listdir(folder)):
            assert time.monotonic() < deadline, "nothing was published"
    assert _kill_children(consumer.pid, kids) >= 1
    job = _wait(server, owner, job_id, timeout=240)
    assert job["status"] == "successful", job
    status, attempts, dead, kinds = _outcome(db_url, job_id)
    assert (status, dead) == ("successful", 0) and attempts in ((2,) if phase == "processing" else (1, 2))
    assert kinds == sorted(set(kinds)) and "chm" in kinds           # one raster of each kind
    assert len(_stored(server, scan_id)) == len(kinds)               # and nothing else in the store
    with psycopg.connect(db_url) as conn:
        runs = conn.execute("SELECT DISTINCT run_id FROM trees WHERE scan_id = %s", (scan_id,)).fetchall()
    assert runs == [(job_id,)]


def test_killing_the_worker_parent_leaves_no_orphan_and_its_job_runs_once(server, workers, runner_headers, db_url):
    consumer = workers.start(2, **FAST)
    try:
        job_id = _submit(server, runner_headers, {"message": "orphaned", "delay": 3}).json()["jobID"]
        _wait_progress(db_url, job_id, attempt=1, at_least=10)
        kids = _children(consumer.pid)
        assert len(kids) >= 3                          # two workers and the scheduler
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in kids if _alive(pid)] == []
        workers.start(1, **FAST)
        job = _wait(server, runner_headers, job_id, timeout=60)
        assert job["status"] == "successful", job
        assert _outcome(db_url, job_id)[:3] == ("successful", 2, 0)
    finally:
        try:
            os.killpg(consumer.pid, signal.SIGKILL)    # today's orphans, so they take no later test's jobs
        except ProcessLookupError:
            pass


def _without_root_override() -> None:
    """In the worker before exec: root loses CAP_DAC_OVERRIDE (and the capabilities that also
    bypass file modes), so a chmod stops it as it stops any other user."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for cap in (1, 2, 3):                              # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        prctl(24, cap, 0, 0, 0)                        # PR_CAPBSET_DROP (EPERM when not root: nothing to drop)


def test_an_unwritable_store_during_publishing_is_retried_and_succeeds(server, workers, owner, project, points,
                                                                      db_url):
    scan_id = _scan(server, db_url, project, points, name="readonly.laz")
    folder = Path(server.log).parent / "storage" / "rasters" / f"scan-{scan_id}"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        workers.start(1, preexec_fn=_without_root_override, **FAST)
        r = requests.post(f"{server}/processes/canopy-height-model/execution", json={"inputs": {"scan": scan_id}},
                          headers={"Prefer": "respond-async", **owner})
        job_id = r.json()["jobID"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, attempts, _, message = job = _job(db_url, job_id)
            if status != "running" and attempts >= 1:
                break
            time.sleep(0.1)
        assert status == "accepted", job               # to be retried, not failed
        assert "retrying" in message and "storage" in message, job
        assert "/" not in message and str(folder.parent.parent) not in message, job
        assert _stored(server, scan_id) == []
    finally:
        folder.chmod(0o755)
    job = _wait(server, owner, job_id, timeout=120)
    assert job["status"] == "successful", job
    status, attempts, dead, kinds = _outcome(db_url, job_id)
    assert (status, attempts, dead, kinds) == ("successful", 2, 0, ["chm"])
    assert len(_stored(server, scan_id)) == 1


@pytest.fixture(scope="module")
def runner_headers(make_user):
    return {"Authorization": f"Bearer {make_user('analyst').token}"}
