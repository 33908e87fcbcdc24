#!/usr/bin/env bash
# The main job on a fresh machine: set up (venv, Docker engine, local base image), then
# lock and build the shipped example matrix, and render the project's own matrix.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
matrix=${1:-examples/wan-cpu/matrix.yaml}
builder lock -m "$matrix"
builder build -m "$matrix" -o build/example
builder render -o build/root >/dev/null
builder matrix | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["cells"]), "cells in matrix.yaml rendered to build/root/")'
