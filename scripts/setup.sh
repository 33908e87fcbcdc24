#!/usr/bin/env bash
# Set up a fresh Debian machine for builder: a venv with builder and its dev tools, the Docker
# engine (Debian's docker.io, whose 20.10 client has BuildKit built in), started and polled,
# and the registry-free test base image. Idempotent; fails loudly when the engine cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q -e '.[dev]'

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  else
    echo "setup: install docker.io and debootstrap (needs root on Debian)" >&2
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
