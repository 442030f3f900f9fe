#!/usr/bin/env bash
# Train COST on a Cloud TPU pod slice: every host runs the same command (`--worker=all`); JAX finds
# the other hosts itself (cost_jax.distributed, no arguments on TPU pods).
#
#   launch/tpu_pod.sh [--dry-run] create              # create the TPU VM slice
#   launch/tpu_pod.sh [--dry-run] setup               # copy this checkout to every host, install
#   launch/tpu_pod.sh [--dry-run] run CONFIG WORKDIR [--config.x=y ...]
#   launch/tpu_pod.sh [--dry-run] delete
#
# Environment: TPU_NAME (required), ZONE (required), ACCELERATOR (default v4-32),
# TPU_VERSION (default tpu-ubuntu2204-base), PROJECT (optional, else gcloud's default).
# WORKDIR should be a gs:// bucket path or a shared file system: every host writes its shards there.
# Data: config.data.source=tfds with config.data.tfds_dir on a bucket (see input_pipeline/tfds_builders).
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
action="${1:-}"
shift || true
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
accelerator="${ACCELERATOR:-v4-32}"
version="${TPU_VERSION:-tpu-ubuntu2204-base}"
project_args=()
if [[ -n "${PROJECT:-}" ]]; then project_args=(--project "$PROJECT"); fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

run() {
  if [[ "$dry_run" == "1" ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${project_args[@]}" \
    --worker=all --command "$1"
}

case "$action" in
  create)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" "${project_args[@]}" \
      --accelerator-type "$accelerator" --version "$version"
    ;;
  setup)
    run gcloud compute tpus tpu-vm scp --recurse "$here" "$TPU_NAME:~/cost-jax" --zone "$ZONE" \
      "${project_args[@]}" --worker=all
    ssh_all 'cd ~/cost-jax && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt "jax[tpu]" && .venv/bin/pip install -q --no-deps -e .'
    ;;
  run)
    if [[ $# -lt 2 ]]; then
      echo "usage: $0 run CONFIG WORKDIR [--config.field=value ...]" >&2
      exit 2
    fi
    config="$1"
    workdir="$2"
    shift 2
    command="cd ~/cost-jax && .venv/bin/python -m cost_jax.train --config=$(printf '%q' "$config") --workdir=$(printf '%q' "$workdir")"
    for arg in "$@"; do command="$command $(printf '%q' "$arg")"; done
    ssh_all "$command"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" "${project_args[@]}" --quiet
    ;;
  *)
    echo "usage: $0 [--dry-run] {create|setup|run CONFIG WORKDIR [overrides]|delete}" >&2
    exit 2
    ;;
esac
