#!/usr/bin/env bash
# make cuda-check: compile the CUDA sources without a GPU and without a CUDA torch, and print the time.
#
# Every csrc/cuda/*.cu is compiled by nvcc for sm_80 and sm_90 (device code is torch-free); then the
# torch-aware launchers csrc/cuda/*.cpp are syntax-checked by the host compiler against this torch's
# headers and the CUDA headers (CUDA_HOME, default /usr/local/cuda), third-party headers as -isystem
# so -Wall -Wextra judge fastcnn's code only. A CPU-only torch lacks the generated
# c10/cuda/impl/cuda_cmake_macros.h: a stub (build/cuda-check-shim, searched after torch's own
# include dirs) stands in for it.
#
# The .cu objects stay in build/cuda-check (CUDA_CHECK_OBJS): tools/sass_report.py (make sass-report)
# reads their SASS without compiling again.
#
# Jobs run MAX_JOBS at a time (default: the core count), heaviest first: on 2 cores one at a time
# took 3m14s against CI's 3-minute budget. Environment: NVCC, CXX, PYTHON, CUDA_HOME, MAX_JOBS.
set -uo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
CXX=${CXX:-c++}
PYTHON=${PYTHON:-python3}
JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}
START=$SECONDS

command -v "$NVCC" >/dev/null 2>&1 || { echo "cuda-check: $NVCC not found"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fastcnn-cuda-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
objs=${CUDA_CHECK_OBJS:-build/cuda-check}
mkdir -p "$objs"

# The .cu files, largest translation unit first (the implicit-GEMM convs dominate), so that the
# short ones fill the other core instead of leaving one waiting at the end.
cus=$(for f in csrc/cuda/*.cu; do
        [ -e "$f" ] || continue
        echo "$(cat "$f" $(grep -ho '#include "[^"]*"' "$f" | sed 's/#include "\(.*\)"/csrc\/cuda\/\1 csrc\/\1/') 2>/dev/null | wc -c) $f"
      done | sort -rn | cut -d' ' -f2)
cpps=$(ls csrc/cuda/*.cpp 2>/dev/null)
if [ -z "$cus$cpps" ]; then echo "cuda-check: no CUDA sources"; exit 0; fi

if [ -n "$cpps" ]; then
  inc=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-isystem ' + p for p in include_paths()))") || exit 1
  shim=build/cuda-check-shim
  mkdir -p "$shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$shim/c10/cuda/impl/cuda_cmake_macros.h"
fi

# One job: its output to a log, its status and CPU seconds to files; a line when it ends. CPU time
# is printed next to wall time: on a shared machine the wall time says little about the job.
job() {
  local id=$1 what=$2; shift 2
  local t0=$SECONDS rc cpu
  local TIMEFORMAT='%U %S'
  { time "$@" >"$tmp/$id.log" 2>&1; } 2>"$tmp/$id.time"
  rc=$?
  echo "$rc" >"$tmp/$id.rc"
  cpu=$(awk '{printf "%d", $1 + $2}' "$tmp/$id.time")
  echo "$cpu" >"$tmp/$id.cpu"
  printf '  %-4s %-44s %4ds wall %4ds CPU%s\n' "$([ "$rc" = 0 ] && echo ok || echo FAIL)" "$what" \
    $((SECONDS - t0)) "$cpu" "$([ "$rc" = 0 ] || echo "  (rc $rc)")"
}

echo "cuda-check: $(echo $cus | wc -w) .cu (nvcc, sm_80 + sm_90), $(echo $cpps | wc -w) .cpp (c++ -fsyntax-only), $JOBS at a time"
n=0
for f in $cus; do
  n=$((n + 1))
  job "$n" "nvcc $f" "$NVCC" -std=c++17 -O3 --expt-relaxed-constexpr -Icsrc -Xcompiler -Wall \
    -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 \
    -c "$f" -o "$objs/$(basename "$f" .cu).o" &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
done
for f in $cpps; do
  n=$((n + 1))
  # shellcheck disable=SC2086  # $inc is a list of flags
  job "$n" "c++ -fsyntax-only $f" "$CXX" -std=c++17 -fsyntax-only -Wall -Wextra -DFASTCNN_WITH_CUDA -Icsrc $inc \
    -isystem "$shim" -isystem "${CUDA_HOME:-/usr/local/cuda}/include" "$f" &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
done
wait

failed=0
i=0
cpu=0
for f in $cus $cpps; do
  i=$((i + 1))
  rc=$(cat "$tmp/$i.rc" 2>/dev/null || echo 1)
  cpu=$((cpu + $(cat "$tmp/$i.cpu" 2>/dev/null || echo 0)))
  # Warnings are shown too: -Wall/-Wextra output from a successful compile is worth reading.
  if [ -s "$tmp/$i.log" ]; then echo "--- $f"; cat "$tmp/$i.log"; fi
  [ "$rc" = 0 ] || failed=$((failed + 1))
done
elapsed=$((SECONDS - START))
took="$((elapsed / 60))m$((elapsed % 60))s wall, ${cpu}s CPU in the compilers"
if [ "$failed" -ne 0 ]; then
  echo "cuda-check: FAILED ($failed of $n) in $took"
  exit 1
fi
echo "cuda-check: OK ($n files) in $took"
