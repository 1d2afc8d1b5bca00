#!/usr/bin/env bash
# Side-by-side attention benchmark: attn.sdpa vs PyTorch SDPA vs onnxruntime, same inputs, same threads.
#   bash bench/run.sh [--quick] [--filter REGEX] [--threads T] [--write-md] ...   (see bench_sdpa.py --help)
#   bash bench/run.sh --setup-only      # only create bench/.venv and compile the peak tools
# Needs the Python module built first (build/python/attn).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
py="${PYTHON:-python3}"   # must be the CPython the extension was built for (3.11)

# 1. Virtual environment with the peers; pip runs only when requirements.txt changed.
if [ ! -x "$venv/bin/python" ]; then
  echo "[run.sh] creating $venv" >&2
  "$py" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[run.sh] installing $(grep -v '^#' "$req" | xargs) (torch is large: a few minutes)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2 || true
  "$venv/bin/python" -m pip install --quiet -r "$req" >&2
  "$venv/bin/python" -c "import torch, numpy, ml_dtypes, onnxruntime, onnx" \
    || { echo "[run.sh] the installed peers do not import" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# 2. Peak-throughput tool: ../shared/tools/machine_peak.cpp (shared/ lies beside the repo), plus a bench-local
#    AVX2 variant used when the machine lacks AVX-512 (the shared tool then dies of SIGILL).
peak_src=""
for c in "${ATTN_MACHINE_PEAK_SRC:-}" "$root/../shared/tools/machine_peak.cpp" \
         "$(git -C "$root" rev-parse --show-toplevel 2>/dev/null)/../shared/tools/machine_peak.cpp" \
         /work/shared/tools/machine_peak.cpp; do
  if [ -n "$c" ] && [ -f "$c" ]; then peak_src="$c"; break; fi
done
bin_dir="$root/build/bench"
mkdir -p "$bin_dir" 2>/dev/null || bin_dir="$(mktemp -d /tmp/attn-bench.XXXXXX)"
peak_args=()
if [ -n "$peak_src" ]; then
  if [ ! -x "$bin_dir/machine_peak" ] || [ "$peak_src" -nt "$bin_dir/machine_peak" ]; then
    g++ -O3 -march=native -pthread "$peak_src" -o "$bin_dir/machine_peak"
  fi
  peak_args+=(--peak-bin "$bin_dir/machine_peak")
else
  echo "[run.sh] warning: shared/tools/machine_peak.cpp not found; set ATTN_MACHINE_PEAK_SRC" >&2
fi
if [ ! -x "$bin_dir/machine_peak_avx2" ] || [ "$here/machine_peak_avx2.cpp" -nt "$bin_dir/machine_peak_avx2" ]; then
  g++ -O3 -march=native -pthread "$here/machine_peak_avx2.cpp" -o "$bin_dir/machine_peak_avx2"
fi
peak_args+=(--peak-fallback-bin "$bin_dir/machine_peak_avx2")

if [ "${1:-}" = "--setup-only" ]; then
  echo "[run.sh] setup done: $venv, $bin_dir" >&2
  exit 0
fi

# 3. The benchmark, all arguments passed through.
cd "$root"
export ATTN_BENCH_VIA_RUNSH=1  # for the command line quoted in BENCHMARKS.md
exec "$venv/bin/python" "$here/bench_sdpa.py" "${peak_args[@]}" "$@"
