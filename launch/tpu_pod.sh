#!/usr/bin/env bash
# Cloud TPU VM pod slices: a thin wrapper around launch/tpu.py (see `launch/tpu_pod.sh --help`).
#
#   launch/tpu_pod.sh --name=NAME --zone=ZONE create --accelerator-type=v5p-64
#   launch/tpu_pod.sh --name=NAME --zone=ZONE ship        # working tree, uncommitted changes too
#   launch/tpu_pod.sh --name=NAME --zone=ZONE install     # ~/ttc_jax/.venv: pip install 'jax[tpu]' .
#   launch/tpu_pod.sh --name=NAME --zone=ZONE run -- --config=configs/paper.py
#   launch/tpu_pod.sh --name=NAME --zone=ZONE status
#   launch/tpu_pod.sh --name=NAME --zone=ZONE fetch --workdir=workdir/paper
#   launch/tpu_pod.sh --name=NAME --zone=ZONE delete
#
# Add --dry-run to print the gcloud commands instead of running them.
set -euo pipefail
exec python3 "$(dirname "$0")/tpu.py" "$@"
