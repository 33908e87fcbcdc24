#!/usr/bin/env bash
# The main job on a fresh machine: set up (venv, Docker engine, local base images), then
# `builder validate` the shipped examples (check, lock, BuildKit build, every probe inside the
# image) and render their reports: the Wan CPU cell, then the RunPod worker (whose serve probe
# runs the worker itself). No image registry is needed: the bases are made locally.
# Pass `--engine venv` to run the same probes without Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
status=0
validate() {  # validate MATRIX OUT [ARGS...]: validate, render the reports, remember a failure
  local matrix=$1 out=$2
  shift 2
  rm -f "$out/report.json"  # a report from an earlier run is not this run's
  builder validate -m "$matrix" -o "$out" "$@" || status=$?
  [ -f "$out/report.json" ] || return 0  # invalid input or a crash: validate said why
  builder report "$out/report.json" --format html -o "$out/report.html"
  builder report "$out/report.json" --format junit -o "$out/junit.xml"
  builder report "$out/report.json" --format md
  echo "reports: $out/report.json $out/report.html $out/junit.xml" >&2
}
validate examples/wan-cpu/matrix.yaml reports/example "$@"
validate examples/runpod-worker/matrix.yaml reports/runpod-worker "$@"
exit "$status"
