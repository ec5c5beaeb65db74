#!/usr/bin/env bash
# Re-runs every benchmark whose figures the READMEs publish, writing dated results files (machine,
# load, versions, date, command) under benches/results/. Run it on an idle machine; each step prints
# where its results went. Steps:
#   main-job      the README's first command, timed twice per binary (`scripts/bench.sh main-job`;
#                 with BEFORE=/path/to/old/attnviz also that binary, in alternation)
#   fidelity      attention fidelity of every layout setting on MiniLM and the GPT-2 / Mistral / ViT fixtures
#   compare       t-SNE / UMAP / PCA against openTSNE, umap-learn, scikit-learn, bhtsne (Python venv
#                 made by benches/peers/setup.sh)
#   extract       extraction throughput against PyTorch + transformers (venv made by scripts/devvenv.sh;
#                 several GB)
#   normalize     attn-normalize's diagnostics on all-MiniLM-L6-v2 (40 built-in sentences, 72 heads):
#                 the per-query Spearman correlations before and after normalization under each
#                 setting, and what a fixed scale c achieves (examples minilm_heads and scale_scan)
#   python        the Python bindings against the Rust library in the same run: `compare`'s own
#                 attnviz fits (1k and 10k points, no peers), then the same fits through
#                 `attnviz.project` from the wheel (built here with maturin, as scripts/test.sh does)
#   decoders      Llama-family decoders on a ~100M-parameter Llama-shaped random checkpoint (made by
#                 benches/peers/make_sized_checkpoint.py in the dev venv): peak memory of f32 and bf16
#                 weights, of the first layer only, of a 4,096-token sequence; throughput against
#                 PyTorch + transformers
# With no argument: main-job and fidelity (the steps that need no Python beyond fetching MiniLM).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/attnviz-target}"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(main-job fidelity)
# The workspace's test build (as scripts/test.sh) also builds every binary; `-p attn-cli` alone would
# resolve other features and build the dependency tree a second time (~10 min here).
cargo test --workspace --no-run --quiet
bin="$CARGO_TARGET_DIR/debug"
minilm="$("$bin/attnviz" fetch-model --print-dir)"
date="$(date -u +%Y-%m-%d)"
mkdir -p benches/results

for step in "${steps[@]}"; do
  case "$step" in
    main-job)
      out="benches/results/main-job-$date.md"
      {
        echo "# main job ($date)"
        echo
        echo "Command: \`attnviz run --out <tmp>\` (the README's first command, model cached), timed with /usr/bin/time -v."
        echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load at start $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version), commit $(git rev-parse --short HEAD)."
        echo
        echo "| binary | run | wall s | pipeline s (its own summary) | peak RSS MB |"
        echo "| --- | --- | --- | --- | --- |"
      } > "$out"
      binaries=("now=$bin/attnviz")
      [ -n "${BEFORE:-}" ] && binaries=("before=$BEFORE" "${binaries[@]}")
      for run in $(seq 1 "${RUNS:-2}"); do
        for entry in "${binaries[@]}"; do
          name="${entry%%=*}"; exe="${entry#*=}"
          tmp="$(mktemp -d)"
          /usr/bin/time -v -o "$tmp/time" "$exe" --json run --out "$tmp/ds" > "$tmp/summary.json" 2> "$tmp/stderr" \
            || { cat "$tmp/stderr" >&2; exit 1; }
          wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); s = 0; for (i = 1; i <= length(t); i++) s = s * 60 + t[i]; print s}' "$tmp/time")
          rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$tmp/time")
          secs=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['seconds'], 1))" "$tmp/summary.json")
          echo "| $name | $run | $wall | $secs | $rss |" >> "$out"
          cp "$tmp/summary.json" "benches/results/main-job-$date-$name-$run.json"
          # The figures of the last run stay in the target directory (e.g. for docs/).
          rm -rf "$CARGO_TARGET_DIR/main-job-figures-$name"
          cp -r "$tmp/ds/figures" "$CARGO_TARGET_DIR/main-job-figures-$name"
          rm -rf "$tmp"
        done
      done
      echo "bench.sh: $out"
      ;;
    fidelity)
      # MiniLM (12 heads: every attention share and per-query term row), then the fixtures: GPT-2
      # (causal), Mistral (grouped-query, sliding window), ViT, every head on 40 sequences.
      fixtures=attn-extract/tests/fixtures
      "$bin/fidelity" --model "all-MiniLM-L6-v2=$minilm" --heads "${FIDELITY_HEADS:-2}" \
        --weights 0.1 --tsne-kl 0.1,0.3,1,3 --umap-kl 1,3,10,30 --results benches/results
      "$bin/fidelity" --model "gpt2-tiny=$fixtures/gpt2_tiny" --model "mistral-tiny=$fixtures/mistral_tiny" \
        --model "vit16-tiny=$fixtures/vit16_tiny" --heads 8 --max-sequences 40 \
        --weights 0.1 --tsne-kl 1,3 --umap-kl 10,30 --results benches/results
      ;;
    compare)
      cargo run --quiet -p attnviz-benches --bin compare -- --sizes 1000,10000 --out "benches/results/compare-$date"
      ;;
    python)
      work="$CARGO_TARGET_DIR/python-bindings"
      rm -rf "$work"
      "$bin/compare" --sizes 1000,10000 --dims 2 --skip python,bhtsne-bh,bhtsne-fitsne --out "$work"
      venv="$CARGO_TARGET_DIR/bench-pyvenv"
      rm -rf "$venv"
      python3 -m venv "$venv"
      bash scripts/wheel.sh "$work/wheel"
      "$venv/bin/pip" install --quiet --disable-pip-version-check "$work"/wheel/attnviz-*.whl
      "$venv/bin/python" benches/peers/bindings.py "$work" --repeats 3
      out="benches/results/python-bindings-$date"
      mkdir -p "$out"
      cp "$work/results.md" "$work/results.json" "$work/bindings.md" "$work/bindings.json" "$out/"
      echo "bench.sh: $out"
      ;;
    extract)
      "$bin/extract_compare" --model "$minilm" --out "benches/results/extract-minilm-$date"
      ;;
    normalize)
      out="benches/results/normalize-minilm-$date.md"
      tmp="$(mktemp -d)"
      "$bin/attnviz" run --max-sequences 40 --methods pca --no-render --quiet --out "$tmp/ds" > /dev/null
      cargo build --quiet -p attn-normalize --examples
      {
        echo "# attn-normalize on all-MiniLM-L6-v2 ($date)"
        echo
        echo "Dataset: \`attnviz run --max-sequences 40 --methods pca --no-render\` (the first 40 built-in sentences, 72 heads); raw vectors read back by the examples."
        echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load at start $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version), commit $(git rev-parse --short HEAD). The ms column is not a benchmark."
        ex="$CARGO_TARGET_DIR/debug/examples"
        for variant in "defaults:" "flat tolerance 0:EPS=0" "80th percentile, flat tolerance 0:EPS=0 80" "scaled only (no translation):notranslate" "whole-head threshold, flat tolerance 0:EPS=0 head"; do
          name="${variant%%:*}"; spec="${variant#*:}"
          echo; echo "## minilm_heads, $name"; echo; echo '```text'
          case "$spec" in
            "") "$ex/minilm_heads" "$tmp/ds" ;;
            "EPS=0") EPS=0 "$ex/minilm_heads" "$tmp/ds" ;;
            "EPS=0 80") EPS=0 "$ex/minilm_heads" "$tmp/ds" 80 ;;
            "EPS=0 head") EPS=0 "$ex/minilm_heads" "$tmp/ds" 20 head ;;
            *) "$ex/minilm_heads" "$tmp/ds" 20 notranslate ;;
          esac
          echo '```'
        done
        echo; echo "## scale_scan (a fixed c for every head)"; echo; echo '```text'
        "$ex/scale_scan" "$tmp/ds"
        echo '```'
      } > "$out"
      rm -rf "$tmp"
      echo "bench.sh: $out"
      ;;
    decoders)
      py="$(scripts/devvenv.sh | tail -n 1)"
      models="${ATTNVIZ_CACHE:-$HOME/.cache/attnviz}/bench-models"
      f32="$models/llama-100m"; bf16="$models/llama-100m-bf16"
      [ -f "$f32/model.safetensors" ] || "$py" benches/peers/make_sized_checkpoint.py llama-100m "$f32" >&2
      [ -f "$bf16/model.safetensors" ] || "$py" benches/peers/make_sized_checkpoint.py llama-100m-bf16 "$bf16" >&2
      out="benches/results/decoders-$date.md"
      tmp="$(mktemp -d)"
      echo "the cat sat on the mat" > "$tmp/one.txt"
      # ~4,600 tokens of the fixture tokenizer, cut to the model's 4,096 positions by --truncate.
      "$py" -c "import random; random.seed(1); w='the a model attention head query key value token sentence cat dog runs jumps over under quickly slowly red blue green small large and or but because when while house tree river mountain city book'.split(); print(' '.join(random.choice(w) for _ in range(1200)))" > "$tmp/long.txt"
      {
        echo "# Llama-family decoders: memory and throughput ($date)"
        echo
        echo "Checkpoints: benches/peers/make_sized_checkpoint.py llama-100m / llama-100m-bf16 (100,092,672 parameters: 12 layers, 12 query / 4 key-value heads, hidden 768, MLP 2048, vocabulary 32,000; f32 = 400 MB, bf16 = 200 MB)."
        echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load at start $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version), commit $(git rev-parse --short HEAD). Peak RSS from /usr/bin/time -v (file pages of the memory-mapped checkpoint included)."
        echo
        echo "| run | command | wall s | peak RSS MB |"
        echo "| --- | --- | --- | --- |"
      } > "$out"
      measure() {  # name, model dir, corpus, extra args...
        local name="$1" model="$2" corpus="$3"; shift 3
        rm -rf "$tmp/ds"
        /usr/bin/time -v -o "$tmp/time" "$bin/attnviz" run --model "$model" --corpus "$corpus" --out "$tmp/ds" \
          --methods pca --no-render --quiet "$@" > /dev/null 2> "$tmp/stderr" || { cat "$tmp/stderr" >&2; exit 1; }
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); s = 0; for (i = 1; i <= length(t); i++) s = s * 60 + t[i]; print s}' "$tmp/time")
        rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$tmp/time")
        echo "| $name | \`attnviz run --model $(basename "$model") --corpus $(basename "$corpus") --methods pca --no-render $*\` | $wall | $rss |" >> "$out"
      }
      measure "f32, all layers loaded" "$f32" "$tmp/one.txt" --layers 11 --heads 0
      measure "bf16, all layers loaded" "$bf16" "$tmp/one.txt" --layers 11 --heads 0
      measure "f32, first layer only" "$f32" "$tmp/one.txt" --layers 0 --heads 0
      measure "bf16, first layer only" "$bf16" "$tmp/one.txt" --layers 0 --heads 0
      measure "4,096 tokens, 36 heads, attention auto (top 64 per query)" "$f32" "$tmp/long.txt" --truncate --layers 0,5,11
      du -sh "$tmp/ds" | awk '{print "\nDataset of the 4,096-token run: " $1 " on disk."}' >> "$out"
      rm -rf "$tmp"
      cargo run --quiet -p attnviz-benches --bin extract_compare -- --model "$f32" --sentences 100 --repeats 3 \
        --out "benches/results/extract-llama-100m-$date"
      { echo; echo "Throughput: \`extract_compare --model llama-100m --sentences 100 --repeats 3\` (2 rounds, 2 threads, batch 16): see extract-llama-100m-$date/results.md."; } >> "$out"
      echo "bench.sh: $out"
      ;;
    *) echo "bench.sh: unknown step $step (main-job, fidelity, compare, python, extract, normalize, decoders)" >&2; exit 2 ;;
  esac
done
