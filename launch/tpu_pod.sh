#!/usr/bin/env bash
# Runs the main job on every host of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [CONFIG] [extra ttc-jax flags...]
#   e.g. launch/tpu_pod.sh my-v5p-64 us-east5-a configs/paper.py --config.workdir=gs://bucket/run1
#   (configs/paper.py: the paper's settings; configs/demo.py: the CPU demo, default)
#
# Copies this checkout to every worker, installs it, and starts the same command
# on all of them with --distributed (jax.distributed.initialize() auto-detects
# the pod). The mesh spans all chips: problems over 'data', parameters over
# 'model' (set --config.mesh.model). Only process 0 writes metrics and summaries.
set -euo pipefail
tpu=${1:?TPU name}; zone=${2:?zone}; config=${3:-configs/demo.py}; shift $(( $# < 3 ? $# : 3 ))
repo=$(cd "$(dirname "$0")/.." && pwd)
archive=$(mktemp -d)/ttc_jax.tar.gz
git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
gcloud compute tpus tpu-vm scp "$archive" "$tpu":~/ttc_jax.tar.gz --zone "$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e
  rm -rf ~/ttc_jax && mkdir -p ~/ttc_jax && tar -xzf ~/ttc_jax.tar.gz -C ~/ttc_jax
  cd ~/ttc_jax
  python3 -m venv .venv
  .venv/bin/pip install -q 'jax[tpu]' . 
  .venv/bin/ttc-jax --distributed --config=$config $*
"
