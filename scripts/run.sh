#!/usr/bin/env bash
# The main job: installs and builds what is missing (scripts/setup.sh, which also fetches the
# default model, SmolLM2-135M-Instruct), then generates a continuation of a default prompt and
# prints it with its speed. Arguments go to `attn generate` (e.g. -n 100 "The meaning of life").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
if [ "$#" -eq 0 ]; then set -- -n 64 "Once upon a time"; fi
exec build/bin/attn generate "$@"
