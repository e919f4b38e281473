"""The deployment files keep the promises of issue 33, checked without building or running
anything (`make container-check` does that): the image runs as non-root from a BASE argument
with a healthcheck that suits every role; compose's migrations wait for the database and make
the first admin, every service has an image and a restart policy, the worker is not judged
by the web server's healthcheck; the Kubernetes manifests carry probes, grace periods and
resources, wire every setting, and scale the worker Deployment on the Huey queue."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from server import healthcheck

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CANOPY_SERVICES = ("secret", "migrate", "web", "worker", "demo")
LONG_RUNNING = ("postgis", "redis", "web", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _command(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", duration))


def _default(value: str) -> str:
    """`${NAME:-default}` → default (compose's interpolation of an unset variable)."""
    m = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)
    return m.group(1) if m else value


# --- Dockerfile and build context ---------------------------------------------------------

def test_the_image_builds_from_a_base_argument_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", text, re.M)
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages[-1] == "${BASE}", "the runtime stage starts from the BASE argument"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime runs as a non-root user"
    health = re.search(r"^HEALTHCHECK .*\n(?:.*\\\n)*.*CMD (.*)$", text, re.M)
    assert health and "server" in health.group(1) and "healthcheck" in health.group(1), \
        "one healthcheck for every role (python -m server healthcheck), not curl /healthz"
    assert "/run/secrets/ca" in text and "COPY" not in [l.split()[0] for l in text.splitlines()
                                                        if "ca-certificates.crt" in l and l.split()]


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for entry in (".venv", ".venv-conformance", "tests", "bench/out", ".data", "node_modules", ".git"):
        assert entry in ignored or (entry == "bench/out" and "bench" in ignored), entry


# --- compose ---------------------------------------------------------------------------------

def test_every_service_has_an_image_name_and_a_restart_policy(compose):
    images = set()
    for name, service in compose["services"].items():
        assert service.get("image"), f"{name} has no image name"
        assert "restart" in service, f"{name} has no restart policy"
        if name in LONG_RUNNING:
            assert service["restart"] in ("unless-stopped", "always", "on-failure"), name
        if name in CANOPY_SERVICES:
            images.add(service["image"])
            assert service.get("build"), f"{name} can be built from this repository"
    assert len(images) == 1, f"one image runs every Canopy role: {images}"
    assert _default(images.pop()).startswith("canopy:")


def test_migrate_waits_for_the_database_and_makes_the_first_admin(compose):
    services = compose["services"]
    migrate = services["migrate"]
    command = _command(migrate)
    assert re.search(r"server migrate --wait \d+", command), "migrate retries its connection"
    assert "--create-admin" in command, "the first admin is made on the first start"
    assert migrate["depends_on"]["postgis"]["condition"] == "service_healthy"
    probe = " ".join(services["postgis"]["healthcheck"]["test"])
    assert "pg_isready" in probe and "-h " in probe, "checked over TCP: the init server listens on a socket only"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    env = compose["x-canopy"]["environment"]
    assert env["CANOPY_ADMIN_PASSWORD"].startswith("${CANOPY_ADMIN_PASSWORD")


def test_each_role_has_its_own_healthcheck(compose):
    services = compose["services"]
    web, worker = (" ".join(services[n]["healthcheck"]["test"]) for n in ("web", "worker"))
    assert web.endswith("healthcheck web")
    assert worker.endswith("healthcheck worker") and "healthz" not in worker and "curl" not in worker
    for name in ("secret", "migrate", "demo"):
        assert services[name]["healthcheck"] == {"disable": True}, f"{name} is a one-shot: no healthcheck"
    grace = float(_default(compose["x-canopy"]["environment"]["CANOPY_WORKER_GRACE"]))
    assert _seconds(services["worker"]["stop_grace_period"]) > grace, "running jobs get their grace"


def test_the_public_url_and_the_demo_are_the_users_choice(compose):
    env = compose["x-canopy"]["environment"]
    assert env["CANOPY_PUBLIC_URL"].startswith("${CANOPY_PUBLIC_URL:-")
    assert compose["services"]["demo"]["profiles"] == ["demo"]
    assert "demo" in _command(compose["services"]["demo"])
    assert compose["services"]["web"]["ports"] == ["${CANOPY_PORT:-5000}:5000"]


# --- Kubernetes ------------------------------------------------------------------------------

def _documents(paths) -> list[dict]:
    return [doc for path in paths for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs = _documents(K8S / "base" / name for name in kustomization["resources"])
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _container(manifests, kind: str, name: str) -> dict:
    (container,) = manifests[(kind, name)]["spec"]["template"]["spec"]["containers"]
    return container


def _exec(probe: dict) -> str:
    return " ".join(probe["exec"]["command"])


def test_pods_run_as_non_root_with_resources(manifests):
    for key in (("Deployment", "canopy-web"), ("Deployment", "canopy-worker"), ("Job", "canopy-migrate")):
        pod = manifests[key]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, key
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, key
            assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"], key


def test_probes_suit_each_role(manifests):
    web = _container(manifests, "Deployment", "canopy-web")
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["startupProbe"]["httpGet"]["path"] == "/healthz"
    worker = _container(manifests, "Deployment", "canopy-worker")
    for probe in ("livenessProbe", "startupProbe"):
        assert "httpGet" not in worker[probe], "no web server runs in a worker"
        assert "server healthcheck worker" in _exec(worker[probe])
    assert "readinessProbe" not in worker


def test_the_worker_grace_is_above_the_longest_task(manifests):
    config = manifests[("ConfigMap", "canopy-config")]["data"]
    pod = manifests[("Deployment", "canopy-worker")]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(config["CANOPY_WORKER_GRACE"]) >= 600


def test_the_migration_job_waits_and_makes_the_admin(manifests):
    command = " ".join(_container(manifests, "Job", "canopy-migrate")["command"])
    assert re.search(r"server migrate --wait \d+ --create-admin", command)


def test_workers_scale_on_the_queue_and_web_on_cpu(manifests):
    scaled = manifests[("ScaledObject", "canopy-worker")]["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "canopy-worker"}
    assert ("Deployment", "canopy-worker") in manifests
    (trigger,) = scaled["triggers"]
    # the list the scaler reads is the one Huey pushes tasks to (server/jobs/queue.py's RedisHuey)
    from huey import RedisHuey
    (name,) = re.findall(r'RedisHuey\("([^"]+)"', (ROOT / "server" / "jobs" / "queue.py").read_text())
    key = RedisHuey(name, url="redis://127.0.0.1:6399/0").storage.queue_key
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == key == "huey.redis.canopy"
    auth = manifests[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    hpa = manifests[("HorizontalPodAutoscaler", "canopy-web")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "canopy-web"
    for kind in ("PodDisruptionBudget",):
        assert (kind, "canopy-web") in manifests and (kind, "canopy-worker") in manifests


def _settings_variables() -> set[str]:
    """Every environment variable the server's settings and commands read."""
    source = (ROOT / "server" / "settings.py").read_text()
    names = set(re.findall(r'(?:_int|_float|_secret|os\.environ\.get)\("([A-Z][A-Z0-9_]+)"', source))
    names -= {"PROMETHEUS_MULTIPROC_DIR",            # set by the server itself before gunicorn starts
              "CANOPY_ACCESS_TOKEN_MINUTES"}         # the older spelling of _SECONDS
    return names | {"CANOPY_ADMIN_USER", "CANOPY_ADMIN_PASSWORD", "CANOPY_WORKERS", "WEB_CONCURRENCY"}


def test_every_setting_is_wired(manifests):
    config = set(manifests[("ConfigMap", "canopy-config")]["data"])
    secret = set(yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"])
    assert not config & secret, "a variable has one source"
    missing = _settings_variables() - config - secret
    assert not missing, f"not in the ConfigMap nor the Secret: {sorted(missing)}"
    for kind, name in (("Deployment", "canopy-web"), ("Deployment", "canopy-worker"), ("Job", "canopy-migrate")):
        sources = _container(manifests, kind, name)["envFrom"]
        assert {"configMapRef": {"name": "canopy-config"}} in sources
        assert {"secretRef": {"name": "canopy-secrets"}} in sources


def test_the_overlays_render():
    assert shutil.which("kubectl"), "kubectl is missing: scripts/bootstrap.sh --test installs kubernetes-client"
    for overlay in sorted((K8S / "overlays").iterdir()):
        out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        kinds = {d["kind"] for d in yaml.safe_load_all(out.stdout) if d}
        assert {"Deployment", "Job", "ScaledObject", "HorizontalPodAutoscaler", "Ingress"} <= kinds


def test_the_manifests_match_the_kubernetes_schemas(manifests):
    import kubernetes_validate as validate   # a test dependency (pyproject.toml)
    for (kind, name), doc in manifests.items():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue                                   # a CRD: no schema in the Kubernetes release
        validate.validate(doc, "1.30.0", strict=True)


# --- the pieces the containers rely on -------------------------------------------------------

def test_the_healthcheck_knows_each_role_from_its_command():
    assert healthcheck.role_of(["/opt/canopy/bin/python", "-m", "server", "worker"]) == {"worker"}
    assert healthcheck.role_of(["python", "-m", "server", "serve"]) == {"web"}
    assert healthcheck.role_of(["python", "-m", "gunicorn", "--bind", "0.0.0.0:5000", "server.asgi:app"]) == {"web"}
    assert healthcheck.role_of(["python", "-m", "server", "migrate", "--wait", "120"]) == set()


def test_a_worker_is_healthy_while_its_heartbeat_is_fresh(tmp_path):
    path = healthcheck.heartbeat_path(tmp_path / "run")
    assert not healthcheck.worker_alive(path)[0]
    healthcheck.beat(path)
    assert healthcheck.worker_alive(path, stale=30)[0]
    old = time.time() - 120
    import os
    os.utime(path, (old, old))
    ok, why = healthcheck.worker_alive(path, stale=30)
    assert not ok and "stale" in why


def test_one_shot_containers_are_healthy(tmp_path, monkeypatch):
    monkeypatch.setattr(healthcheck, "roles_running", lambda: set())
    assert healthcheck.check("auto", tmp_path, 1)[0]


def test_migrate_retries_until_the_database_answers_then_gives_up():
    from db.migrate import connect
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        connect("postgresql://nobody@127.0.0.1:1/none", wait=1.5, log=lines.append)
    assert 1.4 <= time.monotonic() - started < 10
    assert lines and all("retrying" in line for line in lines)


def test_ci_runs_make_test_and_the_slow_checks_apart():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = {name: " ".join(step.get("run", "") for step in job["steps"]) for name, job in workflow["jobs"].items()}
    assert "make test" in runs["test"]
    assert "make container-check" in runs["containers"] and "make k8s-check" in runs["deploy"]
    makefile = (ROOT / "Makefile").read_text()
    test_target = re.search(r"^test:.*\n((?:\t.*\n)*)", makefile, re.M)
    assert test_target and "container" not in test_target.group(0) and "image" not in test_target.group(0)
