"""schemathesis (pinned in scripts/bootstrap.sh, in .venv-conformance) fuzzes every
operation of the live server's own OpenAPI document with an administrator's token, in a
bounded time, and the checks named in CHECKED must find nothing: no server error, no
response outside its documented schema or media type.

It fuzzes a server on a PostgreSQL and a Redis of its own: it creates, changes and
deletes users, projects and plots at random, which no other test may see.

The document is fuzzed as served, minus `subscriber` in the execute requests (no callback
may leave the machine), and without /auth/logout, /auth/password and /admin/users/{userId} (they would
revoke the fuzzer's own token or deactivate its account half-way; tests/integration cover
them)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import private_services, running_server, token_of

ROOT = Path(__file__).resolve().parents[2]
ST = ROOT / ".venv-conformance" / "bin" / "st"
CHECKED = ["not_a_server_error", "response_schema_conformance", "content_type_conformance"]
# kinds schemathesis names in its summary, by check
_KINDS = {"not_a_server_error": "Server error", "response_schema_conformance": "Response violates schema",
          "content_type_conformance": "Undocumented Content-Type"}


@pytest.fixture()
def private_server(tmp_path):
    """(base URL, an administrator's access token) of a server on services of its own."""
    with private_services("fuzz", "fuzzer", "admin") as (_, _, db, redis_url, _):
        (tmp_path / "run").mkdir()
        # no worker runs here: a synchronous execution answers 201 (queued) after 2 s, not 30
        with running_server((db, redis_url), tmp_path / "run", CANOPY_SYNC_WAIT_SECONDS="2") as base:
            yield base, token_of(base, "fuzzer")


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(private_server, tmp_path):
    assert ST.exists(), "the conformance tools are missing: run `make bootstrap-test`"
    server, token = private_server
    doc = requests.get(f"{server}/openapi?f=json", timeout=30).json()
    for name, schema in doc["components"]["schemas"].items():
        if name == "execute" or name.startswith("execute-"):    # each process's (server/openapi.py)
            del schema["properties"]["subscriber"]
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(doc))
    proc = subprocess.run(
        [str(ST), "run", str(spec), "--url", server, "-H", f"Authorization: Bearer {token}",
         "--checks", ",".join(CHECKED), "--max-examples", "5", "--workers", "4", "--seed", "1",
         "--request-timeout", "30", "--max-time", "150", "--no-color", "--phases", "examples,coverage,fuzzing",
         "--exclude-path", "/auth/logout", "--exclude-path", "/auth/password",
         "--exclude-path", "/admin/users/{userId}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)   # its example database stays there
    out = proc.stdout + proc.stderr
    summary = out[out.find("SUMMARY"):]
    tested = re.search(r"Tested: (\d+)", summary)
    cases = re.search(r"(\d+) generated", summary)
    assert tested and int(tested.group(1)) >= 100 and cases and int(cases.group(1)) > 500, summary
    assert "Schema Error" not in out, out[:8000]     # an operation whose schema it cannot read is not fuzzed
    found = {kind: int(n) for kind, n in re.findall(r"❌ ST\d+ ([A-Za-z -]+?): (\d+)", summary)}
    assert not any(found.get(_KINDS[c]) for c in CHECKED), out[-8000:]
