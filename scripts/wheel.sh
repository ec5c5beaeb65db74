#!/usr/bin/env bash
# Builds the Python wheel (attn-py) into OUTDIR with maturin, from the shared target directory:
# `--profile dev`, the profile the workspace's tests build, so that the dependencies built for them
# are reused (about 2 minutes on 2 cores instead of a second full build). maturin lives in a venv
# cached outside the clone ($ATTNVIZ_CACHE/maturin). For a release wheel: `--release` instead (see
# attn-py/README.md). Used by scripts/test.sh and scripts/bench.sh python.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/wheel.sh OUTDIR}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/attnviz-target}"
maturin_venv="${ATTNVIZ_CACHE:-$HOME/.cache/attnviz}/maturin"
if ! "$maturin_venv/bin/maturin" --version >/dev/null 2>&1; then
    echo "wheel.sh: creating $maturin_venv with maturin" >&2
    python3 -m venv "$maturin_venv"
    "$maturin_venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9,<2"
fi
rm -rf "$out"
"$maturin_venv/bin/maturin" build --quiet --profile dev --manifest-path attn-py/Cargo.toml \
    --interpreter python3 --out "$out"
