#!/usr/bin/env bash
# `make container-check`: build the image and run the compose stack for real, then drive it
# end to end (not part of `make test`: it takes minutes and needs podman or docker).
#
#  1. base images: the public ones with docker; with podman on a machine without a registry
#     (CANOPY_LOCAL_BASE=1, the default with podman) a Debian 12 made by debootstrap
#     (scripts/base-image.sh) and stand-ins for postgis/redis built from it (deploy/podman/);
#  2. `build` the image (timed, size printed);
#  3. `compose up` docker-compose.yml as it is, on a free port, with no admin password
#     given: the migrate service must wait for PostgreSQL and print the admin's password;
#  4. scripts/container_smoke.py, in the image, on the host network: /readyz, sign-in as
#     that admin, a tus upload of a simulated LAZ, ingest-scan and forest-inventory run by
#     the worker container to `successful`, a CHM tile;
#  5. the web and worker containers' healthchecks; `compose down -v` (KEEP=1 keeps it up).
# NO_CACHE=1 builds the image without the layer cache (the figure for a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${CONTAINER_ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
IMAGE=${CANOPY_IMAGE:-localhost/canopy:0.1.0}
PROJECT=${CHECK_PROJECT:-canopycheck}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
t0=$SECONDS
say() { printf 'container-check [%4d s] %s\n' $((SECONDS - t0)) "$*"; }

if [ "$ENGINE" = podman ]; then
  # runc and no default ulimits: crun fails on cgroups v1 hosts (deploy/podman/containers.conf)
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
  : "${CANOPY_LOCAL_BASE:=1}"
  if command -v podman-compose >/dev/null; then COMPOSE=(podman-compose)
  else
    tools=${CANOPY_TOOLS_VENV:-.data/container-tools}
    [ -x "$tools/bin/podman-compose" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q podman-compose; }
    COMPOSE=("$tools/bin/podman-compose")
  fi
else
  : "${CANOPY_LOCAL_BASE:=0}"
  COMPOSE=(docker compose)
fi
COMPOSE+=(-p "$PROJECT" -f docker-compose.yml)

build_args=()
fmt=()
[ "$ENGINE" = podman ] && fmt=(--format docker)    # podman's default OCI format drops HEALTHCHECK
[ "${NO_CACHE:-0}" = 1 ] && fmt+=(--no-cache)         # NO_CACHE=1: time a build from nothing
if [ "$CANOPY_LOCAL_BASE" = 1 ]; then
  say "base images from the Debian mirror (scripts/base-image.sh)"
  CONTAINER_ENGINE=$ENGINE scripts/base-image.sh
  export CANOPY_BASE_IMAGE=localhost/canopy-base:bookworm CANOPY_NODE_IMAGE=localhost/canopy-node:bookworm
  export CANOPY_POSTGIS_IMAGE=${CANOPY_POSTGIS_IMAGE:-localhost/canopy-postgis:15-3}
  export CANOPY_REDIS_IMAGE=${CANOPY_REDIS_IMAGE:-localhost/canopy-redis:7}
  "$ENGINE" image exists "$CANOPY_POSTGIS_IMAGE" 2>/dev/null || \
    "$ENGINE" build --network host -q -t "$CANOPY_POSTGIS_IMAGE" -f deploy/podman/postgis.Containerfile deploy/podman
  "$ENGINE" image exists "$CANOPY_REDIS_IMAGE" 2>/dev/null || \
    "$ENGINE" build --network host -q -t "$CANOPY_REDIS_IMAGE" -f deploy/podman/redis.Containerfile deploy/podman
  build_args+=(--build-arg "BASE=$CANOPY_BASE_IMAGE" --build-arg "NODE_BASE=$CANOPY_NODE_IMAGE")
fi
[ -s "$CA_BUNDLE" ] && build_args+=(--secret "id=ca,src=$CA_BUNDLE")

mkdir -p .data
say "building $IMAGE"
b0=$SECONDS
"$ENGINE" build --network host "${fmt[@]}" "${build_args[@]}" -t "$IMAGE" . >.data/container-build.log 2>&1 \
  || { tail -30 .data/container-build.log; exit 1; }
say "image built in $((SECONDS - b0)) s: $("$ENGINE" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

port=${CANOPY_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export CANOPY_IMAGE=$IMAGE CANOPY_PORT=$port CANOPY_PUBLIC_URL=http://127.0.0.1:$port CANOPY_ADMIN_PASSWORD=
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then say "KEEP=1: the stack stays up (${COMPOSE[*]} down -v stops it)"; return; fi
  say "stopping: ${COMPOSE[*]} down -v"
  "${COMPOSE[@]}" down -v -t 20 >/dev/null 2>&1 || true
}
trap cleanup EXIT
"${COMPOSE[@]}" down -v -t 5 >/dev/null 2>&1 || true
say "compose up (port $port)"
if [ "$ENGINE" = podman ]; then
  # podman-compose on podman < 4.6 ignores `condition: service_healthy` and ties services
  # with --requires, which cannot restart a one-shot that has exited: bring the stack up
  # in the order docker compose would, service by service, without --requires. migrate
  # starts with PostgreSQL still initialising, so its retry loop is what makes it work.
  up() { "${COMPOSE[@]}" up -d --no-deps "$@" >>.data/container-up.log 2>&1 || { tail -30 .data/container-up.log; exit 1; }; }
  : >.data/container-up.log
  up postgis redis secret migrate
  for one in secret migrate; do
    rc=$("$ENGINE" wait "${PROJECT}_${one}_1")
    [ "$rc" = 0 ] || { "$ENGINE" logs "${PROJECT}_${one}_1" | tail -20; say "$one exited $rc"; exit 1; }
  done
  up web worker
else
  docker compose -p "$PROJECT" -f docker-compose.yml up -d --wait web worker
fi

migrate_ctr() { [ "$ENGINE" = podman ] && echo "${PROJECT}_migrate_1" || echo "${PROJECT}-migrate-1"; }
say "waiting for the migrate service to print the first admin's password"
password=
for _ in $(seq 1 150); do
  password=$("$ENGINE" logs "$(migrate_ctr)" 2>/dev/null | sed -n "s/.*user 'admin', password '\([^']*\)'.*/\1/p" | head -1)
  [ -n "$password" ] && break
  sleep 2
done
"$ENGINE" logs "$(migrate_ctr)" 2>&1 | sed 's/password .*/password (hidden)/' | sed 's/^/  migrate | /'
[ -n "$password" ] || { say "no admin password in the migrate logs"; exit 1; }

say "end-to-end check in the image (scripts/container_smoke.py)"
"$ENGINE" run --rm --network host -v "$PWD/scripts:/check:ro" "$IMAGE" \
  python /check/container_smoke.py "http://127.0.0.1:$port" admin "$password"

for role in web worker; do
  if [ "$ENGINE" = podman ]; then
    "$ENGINE" healthcheck run "${PROJECT}_${role}_1" && say "$role healthcheck: healthy"
  else
    say "$role health: $("$ENGINE" inspect "${PROJECT}-${role}-1" --format '{{.State.Health.Status}}')"
  fi
done
"$ENGINE" ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}} {{.Status}}' 2>/dev/null || true
say "passed"
