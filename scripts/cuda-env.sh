#!/usr/bin/env bash
# Sets up (idempotently, from package registries only) what the `cuda` feature needs to build and run,
# in a cache outside the clone: $ATTNVIZ_CUDA_CACHE, default $HOME/.cache/attnviz/cuda.
#
#   eval "$(scripts/cuda-env.sh)"        # set the environment in this shell
#   scripts/cuda-env.sh                  # progress on stderr, the `export` lines on stdout
#
# Why: burn-cuda -> cubecl-cuda -> cubecl-llvm links LLVM statically. Its build dependency
# tracel-llvm-bundler downloads a prebuilt LLVM from GitHub unless its install folder
# ($XDG_DATA_HOME or ~/.local/share)/tracel/tracel-llvm-<version>/ already holds the marker
# `.tracel-llvm-installed`; cubecl-llvm then asks that folder's bin/llvm-config (always with
# --link-static) for --cxxflags, --includedir, --libdir, --libs and --system-libs. PyPI carries the
# same LLVM major (23.1) as relocatable static PIC libraries: mlc-llvm-static, with the NVPTX and other
# backends in mlc-llvm-static-extra-targets (its `[all]` extra). This script installs those into a
# private venv, lays out the folder the bundler expects (a bin/llvm-config wrapper, include/lib/share
# links into the wheel, the marker) under $CACHE/xdg-data, and points XDG_DATA_HOME there.
#
# At run time cubecl needs NVRTC, the CUDA headers ($CUDA_PATH/include and include/cccl) and libdevice
# ($CUDA_PATH/nvvm/libdevice); cudarc dlopens libnvrtc.so.12 and the driver's libcuda.so.1 by name.
# The NVIDIA CUDA 12.9 wheels provide all of it but libcuda (which only a GPU machine's driver has);
# they are assembled into a CUDA_PATH-style folder $CACHE/cuda-12.9. CUDARC_CUDA_VERSION=12090 pins
# cudarc's API version at build time (otherwise it runs `nvcc --version` or falls back to the latest).
#
# Environment: ATTNVIZ_CUDA_CACHE (cache folder), PYTHON (interpreter for the venv, default python3),
# ATTNVIZ_CUDA_LINK_HOME=1 (also link ~/.local/share/tracel/tracel-llvm-<version> to the prepared
# folder, so that builds without the exported XDG_DATA_HOME find it too; off by default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ATTNVIZ_CUDA_CACHE:-$HOME/.cache/attnviz/cuda}"
PYTHON="${PYTHON:-python3}"
VENV="$CACHE/venv"
PY="$VENV/bin/python"

# Pinned versions. The LLVM major.minor must match llvm-sys 231 (LLVM 23.1) used by cubecl-llvm.
LLVM_PKGS=("mlc-llvm-static[all]==23.1.1.post0")
CUDA_VERSION_DIR="12.9"
CUDARC_CUDA_VERSION_PIN="12090"
CUDA_PKGS=(
  "nvidia-cuda-nvrtc-cu12==12.9.86"
  "nvidia-cuda-runtime-cu12==12.9.79"
  "nvidia-cuda-cccl-cu12==12.9.27"
  "nvidia-cuda-nvcc-cu12==12.9.86"
)
STAMP="$VENV/.attnviz-cuda-v1"

log() { echo "cuda-env: $*" >&2; }
# ln -sfn, but only when the link is missing or points elsewhere: a rerun while a build reads these
# folders then changes nothing under it.
link() { [[ -L "$2" && "$(readlink "$2")" == "$1" ]] || ln -sfn "$1" "$2"; }
die() { echo "cuda-env: error: $*" >&2; exit 1; }

# The bundler's version (it names the install folder) comes from Cargo.lock when there is one.
BUNDLER_VERSION="23.1.0-4"
if [[ -f "$ROOT/Cargo.lock" ]]; then
  v="$(awk '/^name = "tracel-llvm-bundler"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")"
  [[ -n "$v" ]] && BUNDLER_VERSION="$v"
fi

# ---- 1. the venv with the LLVM SDK and the CUDA wheels ------------------------------------------
check_venv() {
  "$PY" - <<'EOF' 2>/dev/null
import importlib.util, pathlib, sys
import mlc_llvm_static, nvidia
root = pathlib.Path(mlc_llvm_static.__file__).parent / "static"
assert (root / "share/mlc-llvm-static/extra.json").is_file(), "extra targets missing"
assert (root / "lib/libLLVMNVPTXCodeGen.a").is_file(), "NVPTX backend missing"
nv = pathlib.Path(list(nvidia.__path__)[0])
for p in ("cuda_nvrtc/lib/libnvrtc.so.12", "cuda_runtime/include/cuda.h",
          "cuda_cccl/include/cuda", "cuda_nvcc/nvvm/libdevice/libdevice.10.bc"):
    assert (nv / p).exists(), p
EOF
}
if [[ -x "$PY" && -f "$STAMP" ]] && check_venv; then
  log "venv ok: $VENV"
else
  log "installing the LLVM SDK and CUDA wheels into $VENV"
  mkdir -p "$CACHE"
  [[ -x "$PY" ]] || "$PYTHON" -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "${LLVM_PKGS[@]}" "${CUDA_PKGS[@]}" >&2
  check_venv || die "the wheels installed, but their files are not where expected (see check_venv)"
  touch "$STAMP"  # last, so that an interrupted install is redone, not trusted
fi

SITE_LLVM="$("$PY" -c 'import mlc_llvm_static, os; print(os.path.join(os.path.dirname(os.path.realpath(mlc_llvm_static.__file__)), "static"))')"
NV="$("$PY" -c 'import nvidia, os; print(os.path.realpath(list(nvidia.__path__)[0]))')"

# ---- 2. the install folder tracel-llvm-bundler expects ---------------------------------------------
XDG_DIR="$CACHE/xdg-data"
LLVM_DIR="$XDG_DIR/tracel/tracel-llvm-$BUNDLER_VERSION"
MARKER="$LLVM_DIR/.tracel-llvm-installed"
mkdir -p "$LLVM_DIR/bin"
for d in include lib share; do
  link "$SITE_LLVM/$d" "$LLVM_DIR/$d"
done
# The wheel's llvm-config is a Python script with a `/usr/bin/env python3` shebang; the wrapper runs
# it with the venv's interpreter and reports this folder as the prefix (paths then go through the
# links above). `--link-static` (always passed by the bundler) is accepted and ignored: it only has
# static libraries. The `all` profile (every backend, NVPTX included) is picked since extra.json is there.
cat >"$LLVM_DIR/bin/llvm-config.tmp" <<EOF
#!/bin/sh
# Generated by attnviz scripts/cuda-env.sh: LLVM $("$PY" -c 'import mlc_llvm_static._version as v; print(v.__version__)' 2>/dev/null || echo 23.1.1) from PyPI's mlc-llvm-static.
MLC_LLVM_STATIC_SDK_PREFIX="$LLVM_DIR" exec "$PY" "$SITE_LLVM/bin/llvm-config.py" "\$@"
EOF
chmod +x "$LLVM_DIR/bin/llvm-config.tmp"
if cmp -s "$LLVM_DIR/bin/llvm-config.tmp" "$LLVM_DIR/bin/llvm-config"; then
  rm -f "$LLVM_DIR/bin/llvm-config.tmp"
else
  mv -f "$LLVM_DIR/bin/llvm-config.tmp" "$LLVM_DIR/bin/llvm-config"
fi

LC="$LLVM_DIR/bin/llvm-config"
ver="$("$LC" --link-static --version)" || die "llvm-config --version failed"
[[ "$ver" == 23.1.* ]] || die "llvm-config says LLVM $ver; cubecl-llvm (llvm-sys 231) needs 23.1.x"
libs="$("$LC" --link-static --libs)" || die "llvm-config --libs failed"
for lib in LLVMNVPTXCodeGen LLVMNVPTXDesc LLVMNVPTXInfo LLVMCore LLVMSupport; do
  [[ " $libs " == *" -l$lib "* ]] || die "llvm-config --libs lacks -l$lib"
done
libdir="$("$LC" --link-static --libdir)"
[[ -f "$libdir/libLLVMCore.a" ]] || die "llvm-config --libdir ($libdir) has no libLLVMCore.a"
incdir="$("$LC" --link-static --includedir)"
[[ -f "$incdir/llvm-c/Core.h" ]] || die "llvm-config --includedir ($incdir) has no llvm-c/Core.h"
"$LC" --link-static --cxxflags >/dev/null || die "llvm-config --cxxflags failed"
syslibs="$("$LC" --link-static --system-libs)" || die "llvm-config --system-libs failed"
# -lz and -lzstd are met by the wheel's own libz.a/libzstd.a in --libdir (searched first).
# Created once, never touched again: the bundler's build script reruns (and cubecl-llvm rebuilds)
# whenever the marker's timestamp changes.
[[ -f "$MARKER" ]] || : >"$MARKER"
log "LLVM $ver ready for tracel-llvm-bundler $BUNDLER_VERSION: $LLVM_DIR ($(wc -w <<<"$libs") libraries; system: $syslibs)"

if [[ "${ATTNVIZ_CUDA_LINK_HOME:-0}" == 1 ]]; then
  home_dir="$HOME/.local/share/tracel/tracel-llvm-$BUNDLER_VERSION"
  if [[ -e "$home_dir" && ! -L "$home_dir" ]]; then
    log "not linking $home_dir: a real folder is already there"
  else
    mkdir -p "$(dirname "$home_dir")" && link "$LLVM_DIR" "$home_dir"
    log "linked $home_dir -> $LLVM_DIR"
  fi
fi

# ---- 3. a CUDA_PATH-style folder ------------------------------------------------------------------
CUDA_DIR="$CACHE/cuda-$CUDA_VERSION_DIR"
mkdir -p "$CUDA_DIR/include" "$CUDA_DIR/lib"
link_entries() {  # link each entry of folder $1 into folder $2 (skipping the wheels' Python files)
  local src="$1" dst="$2" e name
  for e in "$src"/*; do
    name="$(basename "$e")"
    [[ "$name" == __init__.py || "$name" == __pycache__ ]] && continue
    link "$e" "$dst/$name"
  done
}
link_entries "$NV/cuda_runtime/include" "$CUDA_DIR/include"
link_entries "$NV/cuda_nvrtc/include" "$CUDA_DIR/include"
link_entries "$NV/cuda_nvcc/include" "$CUDA_DIR/include"
# CUDA 12 keeps CCCL (cuda/, cub/, thrust/, nv/) in include/; CUDA 13 in include/cccl, which cubecl
# also adds when it exists. Both are provided.
link_entries "$NV/cuda_cccl/include" "$CUDA_DIR/include"
link "$NV/cuda_cccl/include" "$CUDA_DIR/include/cccl"
link "$NV/cuda_nvcc/nvvm" "$CUDA_DIR/nvvm"
link "$NV/cuda_nvcc/bin" "$CUDA_DIR/bin"
for f in "$NV"/cuda_nvrtc/lib/*.so* "$NV"/cuda_runtime/lib/*.so* "$NV"/cuda_runtime/lib/*.a; do
  link "$f" "$CUDA_DIR/lib/$(basename "$f")"
done
link libnvrtc.so.12 "$CUDA_DIR/lib/libnvrtc.so"
link libcudart.so.12 "$CUDA_DIR/lib/libcudart.so"
link lib "$CUDA_DIR/lib64"
for p in include/cuda.h include/nvrtc.h include/cuda_fp16.h include/cuda/std/type_traits \
         include/cccl/cuda/std/type_traits nvvm/libdevice/libdevice.10.bc lib/libnvrtc.so.12; do
  [[ -e "$CUDA_DIR/$p" ]] || die "CUDA folder lacks $p"
done
log "CUDA $CUDA_VERSION_DIR folder ready: $CUDA_DIR (libcuda.so.1 must come from the GPU driver)"
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  log "note: no libcuda.so.1 on this machine (no NVIDIA driver): builds work, running on a GPU does not"
fi

# ---- 4. the environment ----------------------------------------------------------------------------
cat <<EOF
export XDG_DATA_HOME="$XDG_DIR"
export CUDA_PATH="$CUDA_DIR"
export CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION_PIN
export LD_LIBRARY_PATH="$CUDA_DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
