#!/usr/bin/env bash
# Creates (idempotently) the Python environment holding the peer tools of the comparison:
#   $HOME/.cache/attnviz/benchvenv with openTSNE 1.0.4, umap-learn 0.5.12, scikit-learn, numpy.
# Prints the venv's python path on its last line. Safe to run repeatedly: a complete venv is reused.
set -euo pipefail
VENV="${ATTNVIZ_BENCHVENV:-$HOME/.cache/attnviz/benchvenv}"
PY="$VENV/bin/python"
STAMP="$VENV/.attnviz-peers-v1"
PYTHON="${PYTHON:-python3}"
if [[ -f "$STAMP" && -x "$PY" ]]; then
  echo "$PY"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "openTSNE==1.0.4" "umap-learn==0.5.12" scikit-learn numpy
# The stamp is written last so that an interrupted install is redone, not trusted.
"$PY" -c "import openTSNE, umap, sklearn, numpy" && touch "$STAMP"
echo "$PY"
