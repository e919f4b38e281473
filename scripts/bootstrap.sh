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
  /usr/bin/python3 -c 'import qgis.core' 2>/dev/null || need+=(python3-qgis)   # the QGIS client test
  command -v kubectl >/dev/null || need+=(kubernetes-client)  # renders deploy/k8s (tests/unit/test_deploy.py)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

# progress WHAT PATTERN: one line per step the pattern matches in the output read (on a
# terminal the line is rewritten in place), so a long first install is never silent.
progress() {
  local what=$1 pattern=$2 n=0 line
  while IFS= read -r line; do
    if [[ $line =~ $pattern ]]; then
      n=$((n + 1))
      if [ -t 1 ]; then printf '\r\033[K  %s %d: %s' "$what" "$n" "${BASH_REMATCH[1]:0:60}"
      elif [ $((n % 10)) = 1 ]; then echo "  $what $n: ${BASH_REMATCH[1]:0:60}"; fi
    fi
  done
  if [ -t 1 ]; then printf '\r\033[K'; fi
  echo "  $what: $n done"
}

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap [1/3]: installing system packages ${need[*]} (apt, about half a minute)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" \
    | progress "apt: unpacked package" '^Unpacking ([^ ]+)'
fi

if [ -d web ] && { [ ! -f server/static/viewer/viewer.js ] || [ ! -f server/static/vendor/bootstrap/bootstrap.min.css ] \
     || [ -n "$(find web/src web/package.json web/*.mjs -newer server/static/viewer/viewer.js 2>/dev/null)" ]; }; then
  echo "bootstrap [2/3]: bundling the web app and the page assets from npm (about 20 s the first time)"
  (cd web && npm ci --no-audit --no-fund --silent && npm run --silent build)
fi

if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "bootstrap [3/3]: creating the virtualenv and installing the Python packages (a few minutes the first time)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip 2> >(grep -v '^WARNING: Location' >&2)
  .venv/bin/pip install --progress-bar off -e '.[test]' 2> >(grep -v '^WARNING: Location' >&2) \
    | progress "pip: step" '^ *(Collecting [^ ]+|Downloading [^ ]+|Installing collected packages)'
  touch .venv/.installed
fi

# The outside judges of the server (ogctests, schemathesis), in a virtualenv of their own: ogctests pins
# pyarrow < 18, httpx < 0.28 and pytest < 9, older than Canopy's own.
CONFORMANCE_PINS="ogctests==0.1.15 schemathesis==4.32.5"
if [ "${1:-}" = "--test" ] && [ "$(cat .venv-conformance/.installed 2>/dev/null)" != "$CONFORMANCE_PINS" ]; then
  echo "bootstrap: installing the conformance tools ($CONFORMANCE_PINS, about a minute the first time)"
  python3 -m venv .venv-conformance
  .venv-conformance/bin/pip install -q $CONFORMANCE_PINS 2> >(grep -v '^WARNING: Location' >&2)
  echo "$CONFORMANCE_PINS" > .venv-conformance/.installed
fi
