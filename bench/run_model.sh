#!/usr/bin/env bash
# Model benchmark: attn vs llama.cpp (llama-cpp-python) on the same GGUF, same tokens, same threads.
#   bash bench/run_model.sh [--threads 2] [--repeats 3] [--write-md] ...   (see bench_model.py --help)
# Creates bench/.venv-llama with llama-cpp-python (built from source by pip: ~10-20 minutes the
# first time on 2 cores). Needs attn built first (bash scripts/setup.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv-llama"
req="$here/requirements-llama.txt"
if [ ! -x "$venv/bin/python" ]; then
  echo "[run_model.sh] creating $venv" >&2
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[run_model.sh] installing $(grep -v '^#' "$req" | xargs) (llama.cpp compiles from source)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2 || true
  CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/python" -m pip install --quiet -r "$req" >&2
  "$venv/bin/python" -c "import llama_cpp, numpy" || { echo "[run_model.sh] llama_cpp does not import" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
cd "$root"
exec "$venv/bin/python" "$here/bench_model.py" "$@"
