#!/usr/bin/env bash
# Builds everything and runs every test: GoogleTest (C++) through CTest, then pytest (Python).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== Formatting (clang-format, .clang-format)"
clang-format --dry-run --Werror $(git ls-files '*.cc' '*.h' 2>/dev/null || find include src tools python tests -name '*.cc' -o -name '*.h')
echo "== C++ tests (GoogleTest via CTest)"
ctest --preset release -j"$(nproc)" --timeout 900
echo "== Python tests (pytest)"
.venv/bin/python -m pytest tests/python -q
echo "== Fuzzing (libFuzzer under ASan + UBSan, ${ATTN_FUZZ_SECONDS:-60} s per target)"
bash scripts/fuzz.sh "${ATTN_FUZZ_SECONDS:-60}"
