#!/usr/bin/env bash
# Creates (idempotently) the dev-time Python environment with torch + transformers:
#   $ATTNVIZ_DEVVENV, default $HOME/.cache/attnviz/devvenv.
# Used by scripts/make_fixtures.py (the Hugging Face reference fixtures), by the extraction
# benchmark (benches/src/bin/extract_compare.rs) and by scripts/test.sh, whose Python package tests
# (attnviz.capture, the example notebook) take torch and transformers from it. Prints the venv's
# python path on its last line. PyPI's default torch wheel is large (it brings CUDA libraries):
# several GB the first time (about 3 minutes here).
set -euo pipefail
VENV="${ATTNVIZ_DEVVENV:-$HOME/.cache/attnviz/devvenv}"
PY="$VENV/bin/python"
STAMP="$VENV/.attnviz-dev-v1"
PYTHON="${PYTHON:-python3}"
if [[ -x "$PY" ]] && { [[ -f "$STAMP" ]] || "$PY" -c "import torch, transformers, safetensors, numpy, PIL" 2>/dev/null; }; then
  touch "$STAMP"
  echo "$PY"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip >&2
"$PY" -m pip install --quiet "torch==2.15.0" "transformers==5.23.0" safetensors numpy pillow >&2
# The stamp is written last so that an interrupted install is redone, not trusted.
"$PY" -c "import torch, transformers, safetensors, numpy, PIL" && touch "$STAMP"
echo "$PY"
