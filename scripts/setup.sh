#!/usr/bin/env bash
# Installs what attn needs and builds it. Idempotent and quick when nothing changed:
#   - Debian packages (only when one is missing),
#   - the Python environment .venv (only when python/requirements.txt changed),
#   - the CMake build in build/ (incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# chromium + chromium-driver: the viewer page's browser tests (tests/python/test_viewer.py).
APT_PACKAGES=(g++ cmake ninja-build pkg-config libhwy-dev googletest libgtest-dev libcli11-dev nlohmann-json3-dev python3-venv clang-format libpng-dev libcpp-httplib-dev
              chromium chromium-driver)
bash scripts/apt_install.sh setup "${APT_PACKAGES[@]}"

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum python/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -r python/requirements.txt
  echo "$want" > "$stamp"
fi
# `import attn` from .venv finds the package built in build/python.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$ROOT/build/python" > "$site/attn-build.pth"

# The default model (SmolLM2-135M-Instruct, Q4_1) into ~/.cache/attn/models.
bash scripts/fetch_model.sh
# The training corpus of `attn train` (the King James Bible, Debian bible-kjv) into ~/.cache/attn/corpus.
bash scripts/fetch_corpus.sh >/dev/null

if [ ! -f build/build.ninja ]; then
  cmake --preset release >/dev/null
fi
echo "setup: building (build/)"
cmake --build --preset release -- -j"$(nproc)" | grep -vE '^\[[0-9]+/[0-9]+\] (Building|Linking)' || true
test "${PIPESTATUS[0]}" -eq 0
