"""Jobs on real Huey workers over the real Redis, with state in the real PostGIS."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests


@pytest.fixture(scope="module")
def runner(make_user):
    """A signed-in analyst (echo needs no project)."""
    return {"Authorization": f"Bearer {make_user('analyst').token}"}


def _submit(server: str, headers: dict, inputs: dict, process: str = "echo", **body) -> requests.Response:
    return requests.post(f"{server}/processes/{process}/execution", json={"inputs": inputs, **body},
                         headers={"Prefer": "respond-async", **headers}, timeout=30)


def _wait(server: str, headers: dict, job_id: str, states=("successful", "failed", "dismissed"),
          timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{server}/jobs/{job_id}", headers=headers).json()
        if job["status"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def _sse(url: str, headers: dict, out: list, timeout: float = 60) -> None:
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data: "):
                out.append(json.loads(line[6:]))


def test_async_job_reports_running_progress_then_success_over_sse(server, workers, runner):
    workers.start(1)
    r = _submit(server, runner, {"message": "hello", "delay": 2})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/jobs/{r.json()['jobID']}")
    assert r.headers["Preference-Applied"] == "respond-async"
    job_id = r.json()["jobID"]
    seen: list[dict] = []
    _sse(f"{server}/jobs/{job_id}/events", runner, seen)
    statuses = [e["status"] for e in seen]
    assert statuses[-1] == "successful"
    assert "running" in statuses
    progress = [e["progress"] for e in seen if e["status"] == "running"]
    assert len(progress) >= 5 and progress == sorted(progress) and progress[-1] > 50
    job = requests.get(f"{server}/jobs/{job_id}", headers=runner).json()
    assert job["status"] == "successful" and job["progress"] == 100
    assert job["started"] and job["finished"] and job["started"] <= job["finished"]
    assert requests.get(f"{server}/jobs/{job_id}/results", headers=runner).json() == {"echo": "hello"}


def test_sync_execution_of_a_small_process(server, workers, runner):
    workers.start(1)
    r = requests.post(f"{server}/processes/echo/execution", json={"inputs": {"message": "now"}}, headers=runner)
    assert r.status_code == 200 and r.json() == {"echo": "now"}


def test_sync_execution_runs_on_a_worker_never_in_the_web_server(services, tmp_path, make_user, db_url):
    """With no worker running, a synchronous execution waits CANOPY_SYNC_WAIT_SECONDS and
    answers like an asynchronous one: nothing ran the job (or a heartbeat) in gunicorn."""
    from tests.conftest import PASSWORD, running_server
    with running_server(services, tmp_path, CANOPY_SYNC_WAIT_SECONDS="1") as web:
        token = requests.post(f"{web}/auth/token", json={"username": make_user("analyst").username,
                                                         "password": PASSWORD}).json()["access_token"]
        t0 = time.monotonic()
        r = requests.post(f"{web}/processes/echo/execution", json={"inputs": {"message": "later"}},
                          headers={"Authorization": f"Bearer {token}"})
        waited = time.monotonic() - t0
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "accepted" and r.headers["Location"].endswith(r.json()["jobID"])
        assert 1 <= waited < 5
        time.sleep(1.5)
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT status, attempts, heartbeat_at, huey_task_id FROM jobs "
                               "WHERE identifier = %s", (r.json()["jobID"],)).fetchone()
        assert row[:3] == ("accepted", 0, None) and row[3]               # queued for a worker, untouched
        requests.delete(r.headers["Location"], headers={"Authorization": f"Bearer {token}"})


def test_bad_inputs_are_400(server, runner):
    cases = [({"inputs": {}}, "required"), ({"inputs": {"message": "x", "colour": 1}}, "colour"),
             ({"inputs": {"message": "x", "delay": -1}}, "delay"), ({"inputs": {"message": 5}}, "message"),
             ({"inputs": {"message": "x"}, "subscriber": {"successUri": "http://127.0.0.1:9/x"}}, "inside"),
             ({"inputs": {"message": "x"}, "subscriber": {"successUri": "http://169.254.169.254/x"}}, "inside"),
             ({"inputs": {"message": "x"}, "subscriber": {"successUri": "file:///etc/passwd"}}, "http")]
    for body, needle in cases:
        r = requests.post(f"{server}/processes/echo/execution", json=body, headers=runner)
        assert r.status_code == 400 and needle in r.text, (body, r.text)
    assert requests.post(f"{server}/processes/nosuch/execution", json={"inputs": {}},
                         headers=runner).status_code == 404
    assert requests.post(f"{server}/processes/echo/execution", json={"inputs": {"message": "x"}}).status_code == 401


def test_dismissing_a_queued_job_and_a_running_job(server, workers, runner, db_url):
    queued = _submit(server, runner, {"message": "never", "delay": 1}).json()["jobID"]
    r = requests.delete(f"{server}/jobs/{queued}", headers=runner)
    assert r.status_code == 200 and r.json()["status"] == "dismissed"
    workers.start(1)
    running = _submit(server, runner, {"message": "long", "delay": 120}).json()["jobID"]
    _wait(server, runner, running, states=("running",))
    time.sleep(1)
    t0 = time.monotonic()
    assert requests.delete(f"{server}/jobs/{running}", headers=runner).json()["status"] == "dismissed"
    # the worker stops it and is free again: the next job runs at once
    nxt = _submit(server, runner, {"message": "next"}).json()["jobID"]
    assert _wait(server, runner, nxt, timeout=15)["status"] == "successful"
    assert time.monotonic() - t0 < 5
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status, attempts FROM jobs WHERE identifier = %s",
                            (queued,)).fetchone() == ("dismissed", 0)
        assert conn.execute("SELECT status FROM jobs WHERE identifier = %s", (running,)).fetchone()[0] == "dismissed"
    assert requests.get(f"{server}/jobs/{running}/results", headers=runner).status_code == 404


def test_a_job_survives_its_worker_being_killed(server, workers, runner, db_url):
    first = workers.start(1, CANOPY_JOB_STALE="3", CANOPY_REAP_EVERY="1")
    job_id = _submit(server, runner, {"message": "survivor", "delay": 6}).json()["jobID"]
    job = _wait(server, runner, job_id, states=("running",))
    while job["progress"] < 20:
        job = requests.get(f"{server}/jobs/{job_id}", headers=runner).json()
        time.sleep(0.1)
    workers.kill(first, signal.SIGKILL)
    workers.start(1, CANOPY_JOB_STALE="3", CANOPY_REAP_EVERY="1")
    assert _wait(server, runner, job_id, timeout=60)["status"] == "successful"
    with psycopg.connect(db_url) as conn:
        status, attempts = conn.execute("SELECT status, attempts FROM jobs WHERE identifier = %s",
                                        (job_id,)).fetchone()
    assert (status, attempts) == ("successful", 2)


def test_sigterm_lets_running_jobs_finish(server, workers, runner):
    proc = workers.start(1, CANOPY_WORKER_GRACE="20")
    job_id = _submit(server, runner, {"message": "finish me", "delay": 2}).json()["jobID"]
    _wait(server, runner, job_id, states=("running",))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert requests.get(f"{server}/jobs/{job_id}", headers=runner).json()["status"] == "successful"


def test_sigterm_requeues_what_does_not_finish_in_the_grace_period(server, workers, runner):
    proc = workers.start(1, CANOPY_WORKER_GRACE="1")
    job_id = _submit(server, runner, {"message": "too long", "delay": 8}).json()["jobID"]
    _wait(server, runner, job_id, states=("running",))
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert requests.get(f"{server}/jobs/{job_id}", headers=runner).json()["status"] == "accepted"
    workers.start(1)
    assert _wait(server, runner, job_id, timeout=60)["status"] == "successful"


def test_hundred_concurrent_echo_jobs_each_run_exactly_once(server, workers, runner, db_url):
    workers.start(1)
    workers.start(1)
    ids = []
    with requests.Session() as s:
        for i in range(100):
            r = s.post(f"{server}/processes/echo/execution", json={"inputs": {"message": f"m{i}"}},
                       headers={"Prefer": "respond-async", **runner})
            ids.append(r.json()["jobID"])
    deadline = time.monotonic() + 60
    with psycopg.connect(db_url) as conn:
        while time.monotonic() < deadline:
            done = conn.execute("SELECT count(*) FROM jobs WHERE identifier = ANY(%s) AND status = 'successful'",
                                (ids,)).fetchone()[0]
            if done == 100:
                break
            time.sleep(0.2)
        rows = conn.execute("SELECT status, attempts, results->>'echo', inputs->'inputs'->>'message' FROM jobs "
                            "WHERE identifier = ANY(%s)", (ids,)).fetchall()
    assert len(rows) == 100
    assert all(r[0] == "successful" and r[1] == 1 and r[2] == r[3] for r in rows), rows


def test_database_outage_is_retried(server, workers, runner, db_url, services):
    """Stop PostgreSQL for a few seconds while a job runs: the job is retried and succeeds."""
    import os
    from pathlib import Path
    from server.devservices import _as_pg_user, _pg_bin
    import subprocess
    # this session's own PostgreSQL (tests/conftest.py), never another session's running beside it
    pgdata = Path(__file__).resolve().parents[2] / ".data" / f"test-{os.getpid()}" / "postgres" / "pgdata"
    if not pgdata.is_dir():
        pytest.skip("needs the suite's own PostgreSQL")
    workers.start(1, CANOPY_JOB_STALE="3", CANOPY_REAP_EVERY="1")
    job_id = _submit(server, runner, {"message": "resilient", "delay": 4}).json()["jobID"]
    _wait(server, runner, job_id, states=("running",))
    pg_ctl = str(_pg_bin() / "pg_ctl")
    subprocess.run(_as_pg_user([pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"]), check=True,
                   stdout=subprocess.DEVNULL)
    time.sleep(4)
    port = int(db_url.rsplit(":", 1)[1].split("/")[0])
    subprocess.run(_as_pg_user([pg_ctl, "-D", str(pgdata), "-l", str(pgdata.parent / "postgres.log"), "-o",
                                f"-p {port} -k {pgdata.parent} -c listen_addresses=127.0.0.1", "-w", "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    job = _wait(server, runner, job_id, timeout=90)
    assert job["status"] == "successful", job
    with psycopg.connect(db_url) as conn:
        attempts = conn.execute("SELECT attempts FROM jobs WHERE identifier = %s", (job_id,)).fetchone()[0]
    assert attempts >= 2


def test_jobs_list_pages_filters_and_hides_other_peoples_jobs(server, workers, runner, make_user):
    workers.start(1)
    mine = [requests.post(f"{server}/processes/echo/execution", json={"inputs": {"message": f"l{i}"}},
                          headers=runner).status_code for i in range(5)]
    assert mine == [200] * 5
    page = requests.get(f"{server}/jobs", params={"limit": 2, "processID": "echo", "status": "successful"},
                        headers=runner).json()
    assert len(page["jobs"]) == 2 and all(j["status"] == "successful" for j in page["jobs"])
    seen, echoes, url = [], set(), f"{server}/jobs?limit=2&status=successful"
    while url:
        body = requests.get(url, headers=runner).json()
        seen += [j["jobID"] for j in body["jobs"]]
        echoes |= {j["jobID"] for j in body["jobs"] if j["processID"] == "echo"}   # the runner's own
        url = next((l["href"] for l in body["links"] if l["rel"] == "next"), None)
    assert len(seen) == len(set(seen)) >= 5 and len(echoes) >= 5
    stranger = {"Authorization": f"Bearer {make_user('viewer').token}"}
    # a stranger sees jobs of public projects (other tests make some), never the runner's echoes
    theirs = requests.get(f"{server}/jobs", params={"limit": 1000}, headers=stranger).json()["jobs"]
    assert not {j["jobID"] for j in theirs} & echoes
    echo = sorted(echoes)[0]
    assert requests.get(f"{server}/jobs/{echo}", headers=stranger).status_code == 404
    assert requests.delete(f"{server}/jobs/{echo}", headers=stranger).status_code == 404
    assert requests.get(f"{server}/jobs?limit=0", headers=runner).status_code == 400
    assert requests.get(f"{server}/jobs?colour=1", headers=runner).status_code == 400


def test_callbacks_reach_the_subscriber(server, workers, runner, services, tmp_path, make_user):
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    # the web server refuses loopback callbacks; this worker is told to allow them
    r = _submit(server, runner, {"message": "cb"}, subscriber={"successUri": f"{base}/ok"})
    assert r.status_code == 400
    from tests.conftest import running_server
    from tests.conftest import PASSWORD
    with running_server(services, tmp_path, CANOPY_CALLBACKS_ALLOW_PRIVATE="1") as permissive:
        workers.start(1, CANOPY_CALLBACKS_ALLOW_PRIVATE="1")
        token = requests.post(f"{permissive}/auth/token", json={"username": make_user("analyst").username,
                                                                 "password": PASSWORD}).json()["access_token"]
        runner = {"Authorization": f"Bearer {token}"}     # tokens name their issuer: this server
        r = _submit(permissive, runner, {"message": "cb"},
                    subscriber={"successUri": f"{base}/ok", "inProgressUri": f"{base}/progress"})
        assert r.status_code == 201, r.text
        _wait(permissive, runner, r.json()["jobID"])
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    httpd.shutdown()
    assert ("/ok", {"echo": "cb"}) in received
    assert any(path == "/progress" for path, _ in received)


def test_owslib_processes_client(server, workers, runner):
    workers.start(1)
    from owslib.ogcapi.processes import Processes
    api = Processes(server, headers=runner)
    ids = [p["id"] for p in api.processes()]
    assert "echo" in ids
    assert api.process("echo")["id"] == "echo"
    result = api.execute("echo", {"message": "owslib"})
    assert result == {"echo": "owslib"}
    # asynchronous, then dismissed once finished: OWSLib 0.35 has no dismiss method, its
    # generic request helper sends the DELETE as any OGC API client would
    api.execute("echo", {"message": "to dismiss"}, async_=True)
    job_id = api.response_headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    deadline = time.monotonic() + 30
    while api._request(path=f"jobs/{job_id}")["status"] != "successful" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert api._request(path=f"jobs/{job_id}/results") == {"echo": "to dismiss"}
    assert api._request(method="DELETE", path=f"jobs/{job_id}")["status"] == "dismissed"
    assert api._request(path=f"jobs/{job_id}")["status"] == "dismissed"
    with pytest.raises(RuntimeError, match="dismissed"):
        api._request(path=f"jobs/{job_id}/results")


def test_a_job_whose_queued_task_was_lost_still_runs(server, workers, runner, db_url):
    """Huey has no acknowledgement: a worker killed between popping a task and claiming
    its job loses the task. Such a job (accepted, nothing queued) is requeued by the reaper."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        owner = conn.execute("SELECT id FROM users ORDER BY id DESC LIMIT 1").fetchone()[0]
        job_id = conn.execute(
            "INSERT INTO jobs (identifier, process_id, status, owner_id, inputs, updated) VALUES "
            "(md5(random()::text), 'echo', 'accepted', %s, %s, now() - interval '1 minute') RETURNING identifier",
            (owner, json.dumps({"inputs": {"message": "lost and found"}}))).fetchone()[0]
    workers.start(1, CANOPY_JOB_STALE="2", CANOPY_REAP_EVERY="1")
    deadline = time.monotonic() + 30
    with psycopg.connect(db_url) as conn:
        while time.monotonic() < deadline:
            status, results = conn.execute("SELECT status, results FROM jobs WHERE identifier = %s",
                                           (job_id,)).fetchone()
            if status == "successful":
                break
            time.sleep(0.2)
    assert (status, results) == ("successful", {"echo": "lost and found"})


def test_dismissing_finished_jobs_removes_their_results(server, workers, runner, make_user, db_url):
    """OGC API - Processes /req/dismiss for a finished job: 200 with status dismissed, the
    results gone (404), and its event stream says so and closes."""
    workers.start(1)
    job_id = _submit(server, runner, {"message": "keep me?"}).json()["jobID"]
    assert _wait(server, runner, job_id)["status"] == "successful"
    assert requests.get(f"{server}/jobs/{job_id}/results", headers=runner).json() == {"echo": "keep me?"}
    r = requests.delete(f"{server}/jobs/{job_id}", headers=runner)
    assert r.status_code == 200 and r.json()["status"] == "dismissed" and r.json()["jobID"] == job_id
    assert requests.get(f"{server}/jobs/{job_id}", headers=runner).json()["status"] == "dismissed"
    results = requests.get(f"{server}/jobs/{job_id}/results", headers=runner)
    assert results.status_code == 404 and "dismissed" in results.text
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status, results FROM jobs WHERE identifier = %s",
                            (job_id,)).fetchone() == ("dismissed", None)
    seen: list[dict] = []
    _sse(f"{server}/jobs/{job_id}/events", runner, seen, timeout=10)
    assert [e["status"] for e in seen] == ["dismissed"]
    # dismissing again changes nothing
    again = requests.delete(f"{server}/jobs/{job_id}", headers=runner)
    assert again.status_code == 200 and again.json()["status"] == "dismissed"
    # a failed job: dismissed too
    owner = make_user("analyst")
    with psycopg.connect(db_url, autocommit=True) as conn:
        failed = conn.execute("INSERT INTO jobs (identifier, process_id, status, owner_id, inputs, message) VALUES "
                              "(md5(random()::text), 'echo', 'failed', %s, '{}', 'it broke') RETURNING identifier",
                              (owner.id,)).fetchone()[0]
    headers = {"Authorization": f"Bearer {owner.token}"}
    assert requests.get(f"{server}/jobs/{failed}/results", headers=headers).status_code == 422
    assert requests.delete(f"{server}/jobs/{failed}", headers=headers).json()["status"] == "dismissed"
    assert requests.get(f"{server}/jobs/{failed}/results", headers=headers).status_code == 404


def test_dismissing_a_running_job_ends_its_event_stream(server, workers, runner):
    workers.start(1)
    job_id = _submit(server, runner, {"message": "stream", "delay": 60}).json()["jobID"]
    _wait(server, runner, job_id, states=("running",))
    seen: list[dict] = []
    reader = threading.Thread(target=_sse, args=(f"{server}/jobs/{job_id}/events", runner, seen, 30))
    reader.start()
    time.sleep(1)
    assert requests.delete(f"{server}/jobs/{job_id}", headers=runner).json()["status"] == "dismissed"
    reader.join(10)
    assert not reader.is_alive()                     # the stream closed after its final event
    assert seen[-1]["status"] == "dismissed" and "running" in [e["status"] for e in seen[:-1]]
