#!/usr/bin/env bash
# The GPU benchmark set behind BENCHMARKS.md's GPU tables: one command, each benchmark under its own
# time limit, every log kept in LOG_DIR (default bench_logs/).
#
#   bash bench/gpu_suite.sh [LOG_DIR]
#
# 1. r50 per-frame tracking step, TF32 in both frameworks, batch 1/8/32, torch.compile, stage split.
# 2. r50 training update, TF32, batch 32.
# 3. r50 per-frame step in full float32 (both frameworks), batch 1/8.
# 4. r50 training update in full float32, batch 32.
# 5. r50 per-frame step with JAX in bf16 compute, batch 1/8/32.
# Each benchmark prints its figures as it measures them, so a run cut short keeps what it got.
# The XLA allocator grows on demand so that PyTorch, in the same process, gets memory too.
set -u
log_dir=${1:-bench_logs}
mkdir -p "$log_dir"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python=${PYTHON:-python3}

run() {  # run NAME SECONDS ARGS...: one benchmark, its output in LOG_DIR/NAME.log
  local name=$1 seconds=$2
  shift 2
  echo "== $name (limit ${seconds}s): $*"
  local start=$SECONDS
  timeout "$seconds" "$python" "$@" >"$log_dir/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc after $((SECONDS - start))s"
  grep -v '^I[0-9]\|^W[0-9]\|^WARNING' "$log_dir/$name.log" | tail -n 14
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv 2>/dev/null | tee "$log_dir/nvidia_smi.txt"
run inference_r50_tf32 300 -m bench.inference --config=configs/cost_r50.py --precision=tf32 \
  --batch=1,8,32 --iters=200 --warmup=20 --peak_size=8192
run train_r50_tf32 300 -m bench.train_step --config=configs/cost_r50.py --precision=tf32 \
  --batch=32 --iters=20 --warmup=3 --peak_size=8192
run inference_r50_float32 240 -m bench.inference --config=configs/cost_r50.py --precision=float32 \
  --batch=1,8 --iters=200 --warmup=20 --peak_size=8192 --notorch_compile --nostages --nofull_flops
run train_r50_float32 300 -m bench.train_step --config=configs/cost_r50.py --precision=float32 \
  --batch=32 --iters=20 --warmup=3 --peak_size=8192
# JAX in bf16 compute (parameters float32); the PyTorch column stays float32 in TF32 mode.
run inference_r50_bf16 240 -m bench.inference --config=configs/cost_r50.py --precision=tf32 \
  --config.model.dtype=bfloat16 --batch=1,8,32 --iters=200 --warmup=20 --peak_size=8192 \
  --notorch_compile --nostages --nofull_flops
