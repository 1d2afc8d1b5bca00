#!/usr/bin/env bash
# The main job: installs and builds what is missing (scripts/setup.sh, which also fetches the
# default model, SmolLM2-135M-Instruct), then runs `attn inspect`: the model continues a default
# prompt, every head is scored on the induction probe, the strongest heads of each role are
# printed, and the interactive report is written to attn-report/report.html.
# Arguments go to `attn inspect` (e.g. -n 40 --out /tmp/report "The meaning of life").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
if [ "$#" -eq 0 ]; then set -- -n 32 --out attn-report; fi
exec build/bin/attn inspect "$@"
