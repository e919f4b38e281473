#!/usr/bin/env bash
# Installs what Canopy needs on a Debian/Ubuntu machine, once: system packages
# (PostgreSQL + PostGIS 3, Redis, GDAL tools) and the virtualenv. Idempotent and
# quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "${DATABASE_URL:-}" ]; then
  [ -n "$pg_bin" ] || need+=(postgresql)
  ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || need+=(postgresql-15-postgis-3)
fi
[ -n "${REDIS_URL:-}" ] || command -v redis-server >/dev/null || need+=(redis-server)
command -v ogrinfo >/dev/null || need+=(gdal-bin)
command -v npm >/dev/null || need+=(nodejs npm)            # bundles the web viewer (MapLibre GL)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null || need+=(chromium)     # the viewer's end-to-end test
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -d web ] && { [ ! -f server/static/viewer/viewer.js ] || [ -n "$(find web/src web/package.json -newer server/static/viewer/viewer.js 2>/dev/null)" ]; }; then
  echo "bootstrap: bundling the web viewer"
  (cd web && npm ci --no-audit --no-fund --silent && npm run --silent build)
fi

if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "bootstrap: creating the virtualenv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip 2> >(grep -v '^WARNING: Location' >&2)
  .venv/bin/pip install -q -e '.[test]' 2> >(grep -v '^WARNING: Location' >&2)
  touch .venv/.installed
fi
