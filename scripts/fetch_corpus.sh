#!/usr/bin/env bash
# Writes the training corpus of `attn train`: the King James Bible (public domain), from the Debian
# package bible-kjv, as plain prose with one verse per line (the "Ge1:1 " references stripped), to
#   ${XDG_CACHE_HOME:-$HOME/.cache}/attn/corpus/kjv.txt  (31,102 lines, ~4.3 MB)
# Idempotent: installs the package only when `bible` is missing, writes the file only when it is
# absent or empty. Prints the path and size.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/attn/corpus"
FILE="$DIR/kjv.txt"
if [ ! -s "$FILE" ]; then
  if ! command -v bible >/dev/null 2>&1; then
    bash scripts/apt_install.sh fetch_corpus bible-kjv bible-kjv-text
  fi
  mkdir -p "$DIR"
  # Every line is "Book12:34 text", the book with an optional leading 1-3 (1Cor, 2Ki, 3Jn).
  bible -f gen1:1-rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$FILE.part"
  lines=$(wc -l < "$FILE.part")
  if [ "$lines" -ne 31102 ]; then
    echo "fetch_corpus: expected 31102 verses from bible-kjv, got $lines" >&2
    rm -f "$FILE.part"
    exit 1
  fi
  mv "$FILE.part" "$FILE"
fi
echo "$FILE $(wc -c < "$FILE") bytes"
