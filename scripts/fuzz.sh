#!/usr/bin/env bash
# Builds the libFuzzer targets (preset "fuzz", clang++-14, ASan + UBSan, into build-fuzz/) and runs
# every fuzz/*_fuzz.cc target for SECONDS each (default 60). Exits non-zero if any target crashes,
# leaks, times out or trips a sanitizer; the input that did it is kept under build-fuzz/artifacts/.
#
#   scripts/fuzz.sh [SECONDS]        e.g. scripts/fuzz.sh 300
#
# Each target starts from fuzz/corpus/<name>/ (gguf_fuzz.cc -> fuzz/corpus/gguf/), copied to a
# temporary directory so new inputs never dirty the checkout, and from fuzz/<name>.dict when it
# exists. Targets that need the real model (the tokenizer) read ATTN_MODEL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_PER_TARGET=${1:-60}
export ATTN_MODEL=${ATTN_MODEL:-${XDG_CACHE_HOME:-$HOME/.cache}/attn/models/SmolLM2-135M-Instruct.Q4_1.gguf}

# clang 14 and its runtime libraries (libFuzzer, ASan, UBSan); only for fuzzing, so not in setup.sh.
APT_PACKAGES=(clang-14 libclang-rt-14-dev cmake ninja-build pkg-config libhwy-dev nlohmann-json3-dev libpng-dev libcpp-httplib-dev libcli11-dev)
bash scripts/apt_install.sh fuzz "${APT_PACKAGES[@]}"

if [ ! -f build-fuzz/build.ninja ]; then
  cmake --preset fuzz >/dev/null
fi
echo "fuzz: building (build-fuzz/)"
if ! cmake --build --preset fuzz -- -j"$(nproc)" >build-fuzz/build.log 2>&1; then
  grep -vE '^\[[0-9]+/[0-9]+\] (Building|Linking)' build-fuzz/build.log | tail -n 80
  echo "fuzz: build failed (build-fuzz/build.log)"
  exit 1
fi

work=$(mktemp -d /tmp/attn-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
artifacts="$ROOT/build-fuzz/artifacts"
mkdir -p "$artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for src in fuzz/*_fuzz.cc; do
  target=$(basename "$src" .cc)  # gguf_fuzz
  name=${target%_fuzz}           # gguf
  bin=build-fuzz/bin/$target
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin was not built"
    failed+=("$target")
    continue
  fi
  corpus="$work/$name"
  mkdir -p "$corpus"
  if [ -d "fuzz/corpus/$name" ]; then cp -r "fuzz/corpus/$name/." "$corpus/"; fi
  # The model target starts from the test fixtures' tiny models (F16 copies, the smaller ones).
  if [ "$name" = model ]; then cp tests/fixtures/*_tiny_f16.gguf tests/fixtures/*_tiny_mxfp4.gguf "$corpus/"; fi
  args=(-max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
        -artifact_prefix="$artifacts/$target-")
  if [ -f "fuzz/$name.dict" ]; then args+=(-dict="fuzz/$name.dict"); fi
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s (seeds: $(ls "$corpus" | wc -l))"
  log="$work/$target.log"
  if "$bin" "${args[@]}" "$corpus" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" |
      sed "s/^/fuzz: $target /"
    echo "fuzz: $target ok (corpus grew to $(ls "$corpus" | wc -l) inputs)"
  else
    tail -n 60 "$log"
    cp "$log" "$artifacts/$target.log"
    echo "fuzz: $target FAILED; log and input under $artifacts/"
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: failures in: ${failed[*]}"
  exit 1
fi
echo "fuzz: all targets ran ${SECONDS_PER_TARGET}s without a crash"
