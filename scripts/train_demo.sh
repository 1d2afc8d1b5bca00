#!/usr/bin/env bash
# The induction-head demonstration: trains a 1-layer and a 2-layer attention-only model with the
# same settings on the King James Bible, half of each batch's rows being a span of the text
# repeated (--repeat-fraction 0.5), then draws both runs' curves side by side. The 2-layer model
# forms induction heads (score >= 0.4) within about 1,000 steps, with its in-context-learning
# score and its loss breaking away from the 1-layer model's at the same time; the 1-layer model
# cannot (an induction head needs a previous-token head in an earlier layer). About 2 minutes
# on 2 cores.
#   bash scripts/train_demo.sh [OUT]    (default OUT: runs/demo; the plot is OUT/induction_heads.png)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/demo}
bash scripts/setup.sh >/dev/null
settings=(--d-model 128 --heads 4 --context 64 --batch 32 --steps 3000 --lr 2e-3 --repeat-fraction 0.5 --seed 0)
for layers in 1 2; do
  echo "== $layers layer(s): $OUT/L$layers"
  build/bin/attn train --layers "$layers" "${settings[@]}" --out "$OUT/L$layers"
done
build/bin/attn curves "$OUT/L1" "$OUT/L2" --labels "1 layer" "2 layers" --out "$OUT/induction_heads.png"
