#!/usr/bin/env bash
# One command for a GPU machine: build with CUDA, run every test (CPU and GPU), run
# compute-sanitizer (memcheck, racecheck) on a small case of each kernel, run the GPU benchmarks,
# and print a short summary table last. Everything lands in --out DIR (logs, ptxas register/spill
# lines, pytest junit XML, bench JSON, summary.json). Needs PyTorch with CUDA, nvcc, cmake and
# ninja (pip's are fine); no network. Without a GPU it builds and stops (a dry run).
#
#   bench/gpu_check.sh [--out DIR] [--python PY] [--skip-build] [--skip-sanitizer] [--quick]
#
# Budget: about 1-2 min build (one arch, all cores), 2-3 min tests, 1 min sanitizer, 1-2 min bench
# on an H100/H200 -- under 8 min. TORCH_CUDA_ARCH_LIST defaults to the GPU's own arch.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)"
PY="${PYTHON:-python3}"
SKIP_BUILD=0 SKIP_SAN=0 QUICK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --skip-sanitizer) SKIP_SAN=1; shift ;;
    --quick) QUICK="--quick"; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
: > "$OUT/steps.tsv"
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"

# step NAME CMD...: runs CMD with its output in $OUT/NAME.log, records rc and seconds.
step() {
  local name="$1"; shift
  local start rc
  start=$(date +%s)
  echo "gpu_check: $name ..."
  "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$OUT/steps.tsv"
  [ "$rc" -eq 0 ] || echo "gpu_check: $name failed (rc $rc), see $OUT/$name.log"
  return "$rc"
}

HAS_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  if [ "$HAS_GPU" = 1 ]; then
    TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  else
    TORCH_CUDA_ARCH_LIST="8.0;9.0"
  fi
fi
export TORCH_CUDA_ARCH_LIST
echo "gpu_check: out=$OUT gpu=$HAS_GPU archs=$TORCH_CUDA_ARCH_LIST"

if [ "$SKIP_BUILD" = 0 ]; then
  step build env PAGEDINFER_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" setup.py build_ext --inplace
  # ptxas -v lines: registers, shared memory and spills of every kernel (CMakeLists adds -Xptxas=-v).
  grep -E "ptxas info +: (Compiling entry|Used)|bytes stack frame" "$OUT/build.log" > "$OUT/ptxas.txt" || true
  grep -E "bytes spill" "$OUT/build.log" | grep -vE " 0 bytes spill stores, 0 bytes spill loads" > "$OUT/spills.txt" || true
fi

if [ "$HAS_GPU" = 1 ]; then
  step tests "$PY" -m pytest -q -p no:cacheprovider tests --junitxml="$OUT/pytest.xml"
  SAN="$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")"
  if [ "$SKIP_SAN" = 0 ] && [ -x "$SAN" ]; then
    for tool in memcheck racecheck; do
      step "sanitizer_$tool" "$SAN" --tool "$tool" --error-exitcode 3 "$PY" bench/gpu_sanitize_cases.py
    done
  elif [ "$SKIP_SAN" = 0 ]; then
    echo "gpu_check: compute-sanitizer not found; sanitizer steps skipped" | tee "$OUT/sanitizer_missing.log"
  fi
  step bench "$PY" -m pagedinfer.cli bench cuda --device cuda $QUICK --json "$OUT/bench.json"
else
  echo "gpu_check: no CUDA GPU visible to PyTorch: built only (dry run); tests, sanitizer and bench skipped"
fi

"$PY" bench/gpu_summary.py "$OUT"
