#!/usr/bin/env bash
# The main job on a fresh machine: set up (venv, Docker engine, local base image), then
# `builder validate` the shipped Wan CPU example (check, lock, BuildKit build, every probe inside
# the image) and render its reports. No image registry is needed: the base is made locally.
# Pass `--engine venv` to run the same probes without Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
matrix=examples/wan-cpu/matrix.yaml
out=reports/example
status=0
builder validate -m "$matrix" -o "$out" "$@" || status=$?
builder report "$out/report.json" --format html -o "$out/report.html"
builder report "$out/report.json" --format junit -o "$out/junit.xml"
builder report "$out/report.json" --format md
echo "reports: $out/report.json $out/report.html $out/junit.xml" >&2
exit "$status"
