#!/usr/bin/env bash
# The training-step figures of BENCHMARKS.md, to run on a QUIET machine (load average below 1):
#   bash bench/quiet_rerun.sh [tiny|r50|all]     (default all; ~15 min tiny, ~25 min r50 on 2 cores)
# Prints `uptime` before and after each run and one markdown row per config:
# | config | batch | JAX ms/step | JAX ms/step, cached text | eager ms/step | torch.compile ms/step |
#   JAX ÷ eager | JAX ÷ compile | cached ÷ eager | cached ÷ compile | first compile (build + step) | load |
# Ratios are PyTorch time / JAX time (above 1 = JAX faster), both frameworks in the same process.
# Logs: bench/quiet_rerun_<config>.log. The r50 batch is reduced to fit memory when needed
# (bench.train_step says so; the row's batch is the one measured).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" TF_CPP_MIN_LOG_LEVEL=2 TORCH_LOGS="-dynamo"
PY="${PYTHON:-.venv/bin/python}"
which="${1:-all}"
rows=()

run() {  # name config extra-args...
  local name="$1" config="$2"; shift 2
  local log="bench/quiet_rerun_${name}.log"
  local before after
  before="$(uptime | sed 's/.*load average: //')"
  echo "# $name: load before: $before" >&2
  "$PY" -m bench.train_step --config="$config" "$@" >"$log" 2>&1 || { echo "# $name failed: see $log" >&2; return 0; }
  after="$(uptime | sed 's/.*load average: //')"
  echo "# $name: load after: $after" >&2
  local row
  row="$("$PY" - "$log" "$name" "$before" "$after" <<'PYEOF'
import sys
from bench import common
log, name, before, after = sys.argv[1:]
v = common.parse_key_values(open(log).read().strip().splitlines()[-1])
b = int(v['batch'])
batch = f"{b} (asked {int(v['batch_reduced_from'])})" if 'batch_reduced_from' in v else str(b)
f = lambda k: f"{v[k]:.0f}" if isinstance(v.get(k), float) and v[k] == v[k] else 'n/a'
r = lambda k: f"{v[k]:.2f}x" if isinstance(v.get(k), float) and v[k] == v[k] else 'n/a'
compile_s = f"{v['build_s']:.0f} s + {v['jax_compile_s']:.0f} s"
print(f"| {name} | {batch} | {f('jax_ms')} | {f('jax_cached_text_ms')} | {f('torch_ms')} | "
      f"{f('torch_compile_ms')} | {r('speedup_vs_torch')} | {r('speedup_vs_torch_compile')} | "
      f"{r('speedup_cached_vs_torch')} | {r('speedup_cached_vs_torch_compile')} | {compile_s} | "
      f"{before.split(',')[0]} -> {after.split(',')[0]} |")
PYEOF
)"
  rows+=("$row")
  echo "$row"
}

if [[ "$which" == all || "$which" == tiny ]]; then
  run tiny configs/cost_tiny.py --iters=10 --warmup=2
fi
if [[ "$which" == all || "$which" == r50 ]]; then
  run r50 configs/cost_r50.py --iters=3 --warmup=1
fi
echo
echo "| config | batch | JAX ms/step | JAX ms/step, cached text | eager ms/step | torch.compile ms/step | JAX ÷ eager | JAX ÷ compile | cached ÷ eager | cached ÷ compile | first compile (build + step) | load (1 min) before -> after |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do echo "$row"; done
