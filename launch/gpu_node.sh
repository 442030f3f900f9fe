#!/usr/bin/env bash
# Train COST on all GPUs of one node: one process sees every GPU, the mesh spans them.
#
#   launch/gpu_node.sh [--dry-run] CONFIG WORKDIR [--config.x=y ...]
#   launch/gpu_node.sh configs/cost_r50.py runs/r50 --config.data.roots.lasot=/data/LaSOT
#
# Environment: PYTHON (default .venv/bin/python, else python3), CUDA_VISIBLE_DEVICES (optional),
# COST_DETERMINISTIC=1 adds --xla_gpu_deterministic_ops=true (bit-identical resume on GPU).
# Re-running the same command resumes from WORKDIR's latest checkpoint.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then python="$here/.venv/bin/python"; else python=python3; fi
fi

xla_flags="${XLA_FLAGS:-}"
if [[ "${COST_DETERMINISTIC:-0}" == "1" ]]; then
  xla_flags="$xla_flags --xla_gpu_deterministic_ops=true"
fi

cmd=("$python" -m cost_jax.train "--config=$config" "--workdir=$workdir" "$@")
if [[ "$dry_run" == "1" ]]; then
  printf 'cd %q && XLA_FLAGS=%q' "$here" "$xla_flags"
  printf ' %q' "${cmd[@]}"
  printf '\n'
  exit 0
fi
cd "$here"
XLA_FLAGS="$xla_flags" exec "${cmd[@]}"
