#!/usr/bin/env bash
# Base images for machines that cannot reach a container registry: a Debian 12 (bookworm)
# root made by debootstrap from the Debian package mirror, imported into podman.
#
#   scripts/base-image.sh                 # makes localhost/canopy-base:bookworm and localhost/canopy-node:bookworm
#   podman build --build-arg BASE=localhost/canopy-base:bookworm \
#                --build-arg NODE_BASE=localhost/canopy-node:bookworm ...
#
# canopy-base stands in for python:3.11-slim-bookworm (Debian's own python3 is 3.11, with
# venv); canopy-node for node:20-bookworm-slim (Debian's nodejs 18 + npm, enough to bundle
# the web app). Where a registry is reachable, use the public images instead (the
# Dockerfile's defaults) and skip this script. An image that exists is kept (--force remakes it).
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/canopy-base:bookworm}
NODE_IMAGE=${NODE_IMAGE:-localhost/canopy-node:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ENGINE=${CONTAINER_ENGINE:-podman}
force=0
[ "${1:-}" = "--force" ] && force=1

has_image() { "$ENGINE" image exists "$1" 2>/dev/null; }
t0=$SECONDS

if [ $force = 1 ] || ! has_image "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null || { echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  root=$(mktemp -d /var/tmp/canopy-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "base-image: debootstrap bookworm (minbase + python3) from $MIRROR into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  # what a slim image leaves out: package lists, caches, docs, man pages
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
         "$root"/usr/share/info/* "$root"/tmp/* "$root"/var/log/*.log
  ln -sf python3 "$root/usr/bin/python"
  echo "base-image: importing as $BASE_IMAGE"
  tar -C "$root" -c . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"; trap - EXIT
  echo "base-image: $BASE_IMAGE made in $((SECONDS - t0)) s"
else
  echo "base-image: $BASE_IMAGE exists (--force remakes it)"
fi

if [ $force = 1 ] || ! has_image "$NODE_IMAGE"; then
  t1=$SECONDS
  echo "base-image: $NODE_IMAGE = $BASE_IMAGE + Debian's nodejs and npm"
  ctx=$(mktemp -d)
  printf 'FROM %s\nRUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \\\n && rm -rf /var/lib/apt/lists/*\n' \
    "$BASE_IMAGE" >"$ctx/Containerfile"
  "$ENGINE" build --network host -t "$NODE_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "base-image: $NODE_IMAGE made in $((SECONDS - t1)) s"
else
  echo "base-image: $NODE_IMAGE exists"
fi
"$ENGINE" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "canopy-(base|node)" || true
