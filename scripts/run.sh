#!/usr/bin/env bash
# The main job: builds attn if needed, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec build/bin/attn demo "$@"
