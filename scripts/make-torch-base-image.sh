#!/usr/bin/env bash
# Make a PyTorch-like base without any registry: the test base plus the CPU torch wheel and
# numpy<2 in its system Python (/usr/local/lib/python3.11/dist-packages), as runpod/pytorch
# images carry torch. torch's dependencies come from PyPI; the CA bundle is a BuildKit secret and
# the wheelhouse a bind mount, so neither lands in a layer.
# Usage: scripts/make-torch-base-image.sh [TAG]   (default builder-test-torch-base:bookworm)
set -euo pipefail
tag=${1:-builder-test-torch-base:bookworm}
base=${BUILDER_TEST_BASE:-builder-test-base:bookworm}
docker=${DOCKER:-docker}
wheels=${BUILDER_WHEELHOUSE:-/opt/wheels}
ca=${BUILDER_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if $docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag exists"; exit 0; fi
$docker image inspect "$base" >/dev/null 2>&1 || { echo "$base is missing (scripts/make-base-image.sh)" >&2; exit 1; }
ls "$wheels"/torch-2.13.0+cpu-*.whl >/dev/null || { echo "no torch 2.13.0+cpu wheel in $wheels" >&2; exit 1; }
# The wheelhouse is the build context (only its wheels are sent); the Dockerfile comes on stdin.
DOCKER_BUILDKIT=1 $docker build -t "$tag" --secret id=cacert,src="$ca" -f - "$wheels" >&2 <<EOF
FROM $base
RUN --mount=type=bind,target=/wheels --mount=type=secret,id=cacert \\
    PIP_CERT=/run/secrets/cacert pip install --break-system-packages --no-cache-dir \\
    --disable-pip-version-check --find-links /wheels 'torch==2.13.0+cpu' 'numpy<2'
EOF
echo "made $tag"
